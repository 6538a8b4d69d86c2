"""MLIC metrics of the ML-GCN / SSGRL line, vectorised over all classes.

Shapes: probs [N, C] in [0, 1], targets [N, C] with 1 present, 0 absent, -1 ignored.
The conventions are listed by ``conventions()`` and explained in
docs/reproduction.md (## Metric conventions).
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ._validate import check_options, check_pair

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


def _sorted_codes(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per class, the targets sorted by ascending score.

    The bit pattern of a float in [0, 1] orders like the number and has its two
    top bits clear, so (bits << 2) | (target + 1) sorts by score and carries the
    target along: one plain sort instead of an argsort and a gather. Scores that
    are all float32 values (what models output) use 32-bit keys, which sort
    faster. -0.0 (sign bit only) shifts to 0, the key of +0.0.

    Returns uint32 or uint64 keys [C, N], each row ascending.
    """
    p32 = p.astype(np.float32)
    if np.array_equal(p32, p):
        keys = p32.view(np.uint32) << np.uint32(2)
        keys |= (t + 1).astype(np.uint32)
    else:
        keys = p.view(np.uint64) << np.uint64(2)
        keys |= (t + 1).astype(np.uint64)
    keys = np.ascontiguousarray(keys.T)
    keys.sort(axis=1)
    return keys


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
    """Per-class AP (see ``_average_precision``) for validated float64 p / int8 t [N, C].

    numpy's sort releases the GIL, so large inputs are cut into one block of
    classes per core (``threads=0``: the usable cores); the split does not
    change the result.
    """
    blocks = _class_blocks(*p.shape, threads)
    if len(blocks) == 1:
        return _average_precision(p, t, mode)
    with ThreadPoolExecutor(len(blocks)) as pool:
        return _ap_start(pool, p, t, mode, blocks)()


def _average_precision(p: np.ndarray, t: np.ndarray, mode: str
                       ) -> Tuple[np.ndarray, np.ndarray]:
    """Per-class AP for validated float64 probs and int8 targets [N, C].

    Entries with target -1 are removed. Tied scores form ONE threshold (as in
    scikit-learn's average_precision_score): every positive of a tie group gets
    the precision measured after the whole group, so the result does not depend
    on how ties are ordered. ``mode="voc_interpolated"`` replaces each precision
    by the best precision at any equal-or-higher recall (VOC devkit 2010+).

    Returns (ap float64 [C], NaN where a class has no positive; n_pos int64 [C]).
    """
    n, c = p.shape
    keys = _sorted_codes(p, t)
    code = keys.astype(np.uint8)  # low byte; & 3 → 0 ignored, 1 negative, 2 positive
    code &= 3
    flat = np.flatnonzero(code == 2)  # row-major: ascending score within a class
    rows = flat // n
    n_pos = np.bincount(rows, minlength=c)
    if flat.size == 0:
        return np.full(c, np.nan), n_pos
    first_pos = np.cumsum(n_pos) - n_pos  # flat-list index of each class's first positive
    j = np.arange(flat.size)
    # Ties are usually rare, so they are handled sparsely: ``tied`` lists the flat positions
    # whose score equals their left neighbour's; a run of them ends a tie group.
    tied = np.flatnonzero((keys[:, 1:] ^ keys[:, :-1]) < 4)
    if tied.size:
        tied += tied // (n - 1) + 1  # [C, N-1] index of the left element → [C, N] of the right
        run = np.ones(tied.size, dtype=bool)
        run[1:] = tied[1:] != tied[:-1] + 1
        group_start = np.maximum.accumulate(np.where(run, tied, 0)) - 1
        loc = np.minimum(np.searchsorted(tied, flat), tied.size - 1)
        hit = tied[loc] == flat
        flat = flat.copy()
        flat[hit] = group_start[loc[hit]]
        new = np.ones(flat.size, dtype=bool)
        new[1:] = flat[1:] != flat[:-1]  # positives sharing a group share its start
        j = np.maximum.accumulate(np.where(new, j, 0))
    cols = flat - rows * n  # column where the positive's tie group starts
    # Counts at scores >= the group's score.
    tp = n_pos[rows] - (j - first_pos[rows])
    n_valid = n - cols
    ignored = np.flatnonzero(code == 0)
    if ignored.size:
        after = np.searchsorted(ignored, (rows + 1) * n) - np.searchsorted(ignored, flat)
        n_valid -= after
    prec = tp / n_valid
    if mode == "voc_interpolated":
        # best precision at recall >= this one = over positives with score <= this one
        rank = np.arange(rows.size) - first_pos[rows]
        env = np.zeros((c, int(n_pos.max())))
        env[rows, rank] = prec
        np.maximum.accumulate(env, axis=1, out=env)
        prec = env[rows, rank]
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.bincount(rows, weights=prec, minlength=c) / n_pos
    return ap, n_pos


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
             ap: str = "noninterpolated", topk_mode: str = "threshold") -> Dict[str, Any]:
    """All metrics of GM-MLIC §4.1 for probs / targets [N, C] (numpy or torch).

    Returns a dict with exactly: ``mAP``, ``AP`` (list of C floats, NaN for a class
    with no positive), ``CP CR CF1 OP OR OF1`` at prob >= threshold, the same six
    with suffix ``@{top_k}``, and ``n_classes_ap`` (classes that entered mAP).
    All values are fractions in [0, 1]. Raises ValueError on malformed input.
    """
    thr, k = check_options(threshold, top_k, ap, topk_mode)
    p, t = check_pair(probs, targets)
    blocks = _class_blocks(*p.shape)
    pool = ThreadPoolExecutor(len(blocks)) if len(blocks) > 1 else None
    try:
        join = _ap_start(pool, p, t, ap, blocks)
        gt = t == 1  # threshold metrics run while the AP threads sort
        pred = p >= thr
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


def conventions(*, threshold: float = 0.5, top_k: int = 3, ap: str = "noninterpolated",
                topk_mode: str = "threshold") -> Dict[str, Any]:
    """The conventions behind ``evaluate(**same kwargs)``, for the run record."""
    thr, k = check_options(threshold, top_k, ap, topk_mode)
    return {
        "metrics_version": METRICS_VERSION,
        "ap": ap,
        "ap_ties": "tied scores form one threshold (as sklearn average_precision_score)",
        "ap_ignored": "entries with target -1 removed before ranking",
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
