"""MLIC metrics of the ML-GCN / SSGRL line, vectorised over all classes.

Shapes: probs [N, C] in [0, 1], targets [N, C] with 1 present, 0 absent, -1 ignored.
The conventions are listed by ``conventions()`` and explained in
docs/reproduction.md (## Metric conventions).
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Tuple

import numpy as np

from ._validate import check_options, check_pair

METRICS_VERSION = 1


class NoPositiveClassWarning(UserWarning):
    """Some class has no positive target, so its AP is undefined (NaN, left out of mAP)."""


def _sorted_codes(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per class, the targets sorted by ascending score, with the ties marked.

    The float64 bit pattern of a number in [0, 1] orders like the number and has
    its two top bits clear, so (bits << 2) | (target + 1) sorts by score and
    carries the target along: one plain ``np.sort`` instead of an argsort + gather.
    -0.0 (sign bit only) shifts to 0, the key of +0.0.

    Returns uint64 keys [C, N], each row ascending.
    """
    keys = np.empty((p.shape[1], p.shape[0]), dtype=np.uint64)
    np.left_shift(p.view(np.uint64).T, np.uint64(2), out=keys)
    keys |= (t.T + 1).astype(np.uint64)
    keys.sort(axis=1)
    return keys


def average_precision(p: np.ndarray, t: np.ndarray, mode: str = "noninterpolated"
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
    code = keys.astype(np.uint8) & 3  # 0 ignored, 1 negative, 2 positive
    rows, cols = np.nonzero(code == 2)  # row-major: ascending score within a class
    n_pos = np.bincount(rows, minlength=c)
    if rows.size == 0:
        return np.full(c, np.nan), n_pos
    first_pos = np.cumsum(n_pos) - n_pos  # flat index of each class's first positive
    j = np.arange(rows.size)
    # cols → start of the tie group (ties only matter where scores repeat)
    score = keys >> np.uint64(2)
    tie = score[:, 1:] == score[:, :-1]
    if tie.any():
        start = np.ones((c, n), dtype=bool)
        start[:, 1:] = ~tie
        group = np.where(start, np.arange(n), 0)
        np.maximum.accumulate(group, axis=1, out=group)
        cols = group[rows, cols]
        new = np.ones(rows.size, dtype=bool)
        new[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
        j = np.maximum.accumulate(np.where(new, j, 0))
    # Counts at scores >= the group's score: positives from the flat list, valid
    # entries from the sorted row (minus the ignored ones before the group).
    tp = n_pos[rows] - (j - first_pos[rows])
    if (code == 0).any():
        valid = (code != 0).astype(np.int32)
        before = np.cumsum(valid, axis=1) - valid
        above = before[:, -1] + valid[:, -1]
        n_valid = above[rows] - before[rows, cols]
    else:
        n_valid = n - cols
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
    ap_c, n_pos = average_precision(p, t, ap)
    have = n_pos > 0
    if not have.all():
        missing = np.flatnonzero(~have)
        shown = ", ".join(str(i) for i in missing[:10]) + (", ..." if missing.size > 10 else "")
        warnings.warn(f"{missing.size} of {len(ap_c)} classes have no positive target "
                      f"(class indices {shown}): their AP is NaN and they are left out of mAP",
                      NoPositiveClassWarning, stacklevel=2)
    gt = t == 1
    pred = p >= thr
    sel = topk_mask(p, k)
    if topk_mode == "threshold":
        sel &= pred
    out: Dict[str, Any] = {
        "mAP": float(ap_c[have].mean()) if have.any() else float("nan"),
        "AP": [float(x) for x in ap_c],
    }
    out.update(_prf(pred, gt, ""))
    out.update(_prf(sel, gt, f"@{k}"))
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
