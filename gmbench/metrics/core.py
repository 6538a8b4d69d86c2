"""MLIC metrics of the ML-GCN / SSGRL line, vectorised over all classes.

Shapes: probs [N, C] in [0, 1], targets [N, C] with 1 present, 0 absent, -1 ignored.
The conventions are listed by ``conventions()`` and explained in
docs/protocol.md (## Metrics).
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ._validate import DIFFICULT_MODES, check_options, check_pair
from .ap import average_precision_block as _average_precision

METRICS_VERSION = 1
_PARALLEL_MIN_ENTRIES = 1 << 20  # below this, thread start-up costs more than it saves


def _n_threads() -> int:
    """Usable cores (at most 8); GMBENCH_METRIC_THREADS=1 forces one thread."""
    env = os.environ.get("GMBENCH_METRIC_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"GMBENCH_METRIC_THREADS must be an integer >= 1, got {env!r}")
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


class NoPositiveClassWarning(UserWarning):
    """Some class has no positive target, so its AP is undefined (NaN, left out of mAP)."""


def _class_blocks(n: int, c: int, threads: int = 0) -> List[slice]:
    """Column blocks, one per thread for large inputs (classes are independent)."""
    threads = min(threads or _n_threads(), c)
    if threads <= 1 or n * c < _PARALLEL_MIN_ENTRIES:
        return [slice(0, c)]
    cuts = np.linspace(0, c, threads + 1).astype(int)
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


def _ap_start(pool: Optional[ThreadPoolExecutor], p: np.ndarray, t: np.ndarray, mode: str,
              blocks: List[slice]) -> Callable[[], Tuple[np.ndarray, np.ndarray]]:
    """Start per-block AP (in ``pool`` if given); return a function that joins them."""
    if pool is None:
        ap, n_pos = _average_precision(p, t, mode)
        return lambda: (ap, n_pos)
    futures = [pool.submit(_average_precision, p[:, s], t[:, s], mode) for s in blocks]

    def join() -> Tuple[np.ndarray, np.ndarray]:
        parts = [f.result() for f in futures]
        return np.concatenate([a for a, _ in parts]), np.concatenate([k for _, k in parts])
    return join


def average_precision(p: np.ndarray, t: np.ndarray, mode: str = "noninterpolated",
                      threads: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Per-class AP (see ``ap.average_precision_block``) for validated p / int8 t [N, C].

    numpy releases the GIL in its array loops, so large inputs are cut into one block of
    classes per core (``threads=0``: the usable cores); the split does not
    change the result.
    """
    blocks = _class_blocks(*p.shape, threads)
    if len(blocks) == 1:
        return _average_precision(p, t, mode)
    with ThreadPoolExecutor(len(blocks)) as pool:
        return _ap_start(pool, p, t, mode, blocks)()


def at_least(p: np.ndarray, thr: float) -> np.ndarray:
    """bool p >= thr, exact for float32 p (numpy 1.x would round thr to float32)."""
    if p.dtype == np.float32:
        t32 = np.float32(thr)
        if float(t32) < thr:  # the least float32 >= thr gives the same answer as thr
            t32 = np.nextafter(t32, np.float32(np.inf))
        return p >= t32
    return p >= thr


def topk_mask(p: np.ndarray, k: int) -> np.ndarray:
    """bool [N, C]: each row's k highest scores; ties go to the lower class index."""
    n, c = p.shape
    if k >= c:
        return np.ones((n, c), dtype=bool)
    sel = np.zeros((n, c), dtype=bool)
    rows = np.arange(n)
    if k <= 8:  # k argmax passes beat a row sort for small k
        work = p.copy()
        for _ in range(k):
            col = work.argmax(axis=1)  # first maximum = lower class index
            sel[rows, col] = True
            work[rows, col] = -1.0
    else:
        order = np.argsort(-p, axis=1, kind="stable")[:, :k]
        sel[rows[:, None], order] = True
    return sel


def _prf(pred: np.ndarray, gt: np.ndarray, suffix: str) -> Dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 from bool predictions and ground truth [N, C]."""
    n_c = np.count_nonzero(pred & gt, axis=0).astype(np.float64)
    n_p = np.maximum(np.count_nonzero(pred, axis=0), 1).astype(np.float64)  # never predicted: Np=1
    n_g = np.count_nonzero(gt, axis=0).astype(np.float64)
    cp = float(np.mean(n_c / n_p))
    cr = float(np.mean(n_c / np.maximum(n_g, 1.0)))  # no ground truth: recall 0 (Nc is 0 too)
    op = float(n_c.sum() / n_p.sum())
    orr = float(n_c.sum() / n_g.sum()) if n_g.sum() > 0 else 0.0
    return {f"CP{suffix}": cp, f"CR{suffix}": cr, f"CF1{suffix}": _f1(cp, cr),
            f"OP{suffix}": op, f"OR{suffix}": orr, f"OF1{suffix}": _f1(op, orr)}


def _f1(prec: float, rec: float) -> float:
    return 2.0 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0


def evaluate(probs: Any, targets: Any, *, threshold: float = 0.5, top_k: int = 3,
             ap: str = "noninterpolated", topk_mode: str = "threshold",
             difficult: str = "ignore") -> Dict[str, Any]:
    """All metrics of GM-MLIC §4.1 for probs / targets [N, C] (numpy or torch).

    Returns a dict with exactly: ``mAP``, ``AP`` (list of C floats, NaN for a class
    with no positive), ``CP CR CF1 OP OR OF1`` at prob >= threshold, the same six
    with suffix ``@{top_k}``, and ``n_classes_ap`` (classes that entered mAP).
    All values are fractions in [0, 1]. Raises ValueError on malformed input.
    ``difficult``: "ignore" = entries with target -1 (VOC difficult) leave the ranking;
    "negative" = they count as absent (SSGRL's and Query2Label's VOC evaluation).
    """
    thr, k = check_options(threshold, top_k, ap, topk_mode)
    p, t = check_pair(probs, targets)
    t = apply_difficult(t, difficult)
    blocks = _class_blocks(*p.shape)
    pool = ThreadPoolExecutor(len(blocks)) if len(blocks) > 1 else None
    try:
        join = _ap_start(pool, p, t, ap, blocks)
        gt = t == 1  # threshold metrics run while the AP threads work
        pred = at_least(p, thr)
        sel = topk_mask(p, k)
        if topk_mode == "threshold":
            sel &= pred
        counts = (_prf(pred, gt, ""), _prf(sel, gt, f"@{k}"))
        ap_c, n_pos = join()
    finally:
        if pool is not None:
            pool.shutdown()
    have = n_pos > 0
    if not have.all():
        missing = np.flatnonzero(~have)
        shown = ", ".join(str(i) for i in missing[:10]) + (", ..." if missing.size > 10 else "")
        warnings.warn(f"{missing.size} of {len(ap_c)} classes have no positive target "
                      f"(class indices {shown}): their AP is NaN and they are left out of mAP",
                      NoPositiveClassWarning, stacklevel=2)
    out: Dict[str, Any] = {
        "mAP": float(ap_c[have].mean()) if have.any() else float("nan"),
        "AP": [float(x) for x in ap_c],
    }
    out.update(counts[0])
    out.update(counts[1])
    out["n_classes_ap"] = int(have.sum())
    return out


def apply_difficult(t: np.ndarray, difficult: str) -> np.ndarray:
    """targets int8 [N, C] → the same with -1 kept ("ignore") or set to 0 ("negative")."""
    if difficult not in DIFFICULT_MODES:
        raise ValueError(f"difficult must be one of {DIFFICULT_MODES}, got {difficult!r}")
    return np.where(t < 0, 0, t).astype(t.dtype) if difficult == "negative" else t


def conventions(*, threshold: float = 0.5, top_k: int = 3, ap: str = "noninterpolated",
                topk_mode: str = "threshold", difficult: str = "ignore") -> Dict[str, Any]:
    """The conventions behind ``evaluate(**same kwargs)``, for the run record."""
    thr, k = check_options(threshold, top_k, ap, topk_mode)
    apply_difficult(np.zeros((0, 0), np.int8), difficult)
    return {
        "metrics_version": METRICS_VERSION,
        "ap": ap,
        "ap_ties": "tied scores form one threshold (as sklearn average_precision_score)",
        "ap_ignored": ("entries with target -1 removed before ranking" if difficult == "ignore"
                       else "entries with target -1 counted as negatives (eval.difficult=negative)"),
        "difficult": difficult,
        "ap_no_positive": "AP NaN, left out of mAP, warned",
        "threshold": thr,
        "positive_rule": "prob >= threshold; ground truth = (target == 1)",
        "np_never_predicted": 1,
        "recall_no_ground_truth": 0.0,
        "op_denominator": "sum of Np after the Np=1 rule",
        "cf1": "2*CP*CR/(CP+CR) (not mean per-class F1)",
        "top_k": k,
        "topk_mode": topk_mode,
        "topk_ties": "lower class index first",
    }


def format_percent(x: Any, digits: int = 1) -> str:
    """Fraction → percentage text with ``digits`` decimals: 0.8432 → '84.3'; NaN/None → '-'."""
    if x is None:
        return "-"
    v = float(x)
    if v != v:
        return "-"
    return f"{100.0 * v:.{digits}f}"
