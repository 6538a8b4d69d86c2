"""Paired bootstrap over test images: which differences between table rows are real.

All runs of a comparison are scored on the same test images, so one resample of the images
(multinomial counts ``w`` [N], drawn once) is applied to every row and every seed. In each
resample each run's metrics are computed on the weighted images, each row's value is the
mean over its seeds, and each row's difference to the reference row is taken. Over B
resamples this gives, per row and metric:

* ``delta``: the difference on the full test set (weights all 1), row − reference;
* ``ci``: the 2.5th and 97.5th percentiles of the B resampled differences (percentile CI);
* ``p``: the two-sided bootstrap p-value
  ``p = min(1, 2 · (1 + min(#{Δ_b ≤ 0}, #{Δ_b ≥ 0})) / (B + 1))``, where Δ_b is the
  difference in resample b: the smallest α at which the percentile CI excludes 0, with
  the +1 that keeps a finite bootstrap from claiming p = 0;
* ``p_holm``: ``p`` Holm-corrected over the compared rows (:func:`holm`).

Metrics are those of :mod:`gmbench.metrics` on the dataset in which image i appears w_i
times, computed without building it: AP (noninterpolated, or VOC-interpolated) from each
class's scores sorted ONCE, tied scores forming one threshold as gmbench and scikit-learn
do: the precision of a tie group is (weight of the positives scoring ≥ it) / (weight of all
entries scoring ≥ it), and AP is the weighted mean of it over the positives. A class without
positive weight in a resample is left out of that resample's mAP (as gmbench leaves out a
class without positives). Threshold and top-k metrics (CP ... OF1, ``@k``) use weighted
counts. Shapes: scores float [N, C], targets int8 [N, C], weights [B, N].
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..metrics.core import apply_difficult, at_least, topk_mask

RESAMPLES = 1000
ALPHA = 0.05
PRF = ("CP", "CR", "CF1", "OP", "OR", "OF1")


def resample_weights(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Multinomial counts uint8/uint16 [resamples, n]: image i drawn w[b, i] times of n draws."""
    rng = np.random.default_rng(seed)
    out = np.zeros((resamples, n), dtype=np.uint16)
    step = max(1, (1 << 22) // max(n, 1))  # bounded memory for the draws
    for b0 in range(0, resamples, step):
        b1 = min(resamples, b0 + step)
        idx = rng.integers(0, n, size=(b1 - b0, n)) + np.arange(b1 - b0)[:, None] * n
        out[b0:b1] = np.bincount(idx.ravel(), minlength=(b1 - b0) * n).reshape(b1 - b0, n)
    return out.astype(np.uint8) if out.size and out.max() <= 255 else out


def class_ap(scores: np.ndarray, pos: np.ndarray, wt: np.ndarray, mode: str = "noninterpolated"
             ) -> np.ndarray:
    """Weighted AP of one class for every weight column: scores [N], pos bool [N] (entries
    already restricted to the valid ones), wt integer [N, K] → ap float64 [K] (NaN where the
    positives weigh 0). Sorts once; each column only changes sums."""
    if not pos.any():
        return np.full(wt.shape[1], np.nan)
    order = np.argsort(-scores, kind="stable")
    desc = -scores[order]                                   # ascending
    at = np.flatnonzero(pos[order])                         # positives' ranks
    end = np.searchsorted(desc, desc[at], side="right")    # one past each one's tie group
    ends, first = np.unique(end, return_index=True)        # groups, descending score
    starts = np.concatenate([[0], ends[:-1]])
    # entries below the lowest positive never count
    total = np.cumsum(np.add.reduceat(wt[order[:ends[-1]]], starts, axis=0, dtype=np.int32), axis=0)
    gpos = np.add.reduceat(wt[order[at]], first, axis=0, dtype=np.int32)  # [D, K]
    tp = np.cumsum(gpos, axis=0)
    prec = np.divide(tp, total, out=np.zeros(tp.shape), where=total > 0)
    if mode == "voc_interpolated":   # best precision at any equal-or-higher recall
        prec = np.where(gpos > 0, prec, 0.0)   # a group absent from the resample is no threshold
        prec = np.maximum.accumulate(prec[::-1], axis=0)[::-1]
    npos = tp[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(npos > 0, (gpos * prec).sum(0) / npos, np.nan)


def weighted_ap(scores: np.ndarray, targets: np.ndarray, wt: np.ndarray,
                mode: str = "noninterpolated") -> np.ndarray:
    """Per-class AP float64 [C, K] for scores [N, C], targets int8 [N, C] (-1: ignored,
    apply ``difficult`` first), weight columns wt [N, K]."""
    out = np.empty((scores.shape[1], wt.shape[1]))
    for c in range(scores.shape[1]):
        valid = targets[:, c] >= 0
        if valid.all():
            out[c] = class_ap(scores[:, c], targets[:, c] == 1, wt, mode)
        else:
            out[c] = class_ap(scores[valid, c], targets[valid, c] == 1, wt[valid], mode)
    return out


def weighted_prf(w: np.ndarray, pred: np.ndarray, gt: np.ndarray, chunk: int = 128
                 ) -> Dict[str, np.ndarray]:
    """CP CR CF1 OP OR OF1 float64 [K] as gmbench.metrics defines them (never-predicted class:
    Np = 1; no ground truth: recall 0; CF1 from CP and CR) with weights w [K, N] over the
    images of bool pred / gt [N, C]."""
    hits = (pred & gt).astype(np.float32)
    parts = {"c": [], "p": [], "g": []}
    for k0 in range(0, w.shape[0], chunk):   # float32 sums of integer counts < 2**24 are exact
        wk = w[k0:k0 + chunk].astype(np.float32)
        parts["c"].append(wk @ hits)
        parts["p"].append(wk @ pred.astype(np.float32))
        parts["g"].append(wk @ gt.astype(np.float32))
    n_c, n_p, n_g = (np.concatenate(parts[k]).astype(np.float64) for k in "cpg")
    n_p = np.maximum(n_p, 1.0)
    cp = (n_c / n_p).mean(1)
    cr = (n_c / np.maximum(n_g, 1.0)).mean(1)
    op = n_c.sum(1) / n_p.sum(1)
    g = n_g.sum(1)
    orr = np.divide(n_c.sum(1), g, out=np.zeros_like(g), where=g > 0)

    def f1(a, b):
        return np.divide(2 * a * b, a + b, out=np.zeros_like(a), where=a + b > 0)
    return {"CP": cp, "CR": cr, "CF1": f1(cp, cr), "OP": op, "OR": orr, "OF1": f1(op, orr)}


@dataclass
class Run:
    """One run's predictions and evaluation conventions (record["config"]["eval"])."""
    probs: np.ndarray           # float [N, C]
    targets: np.ndarray         # int8 [N, C]
    eval: dict = field(default_factory=dict)


def run_metrics(run: Run, w: np.ndarray, metrics: Sequence[str]) -> Dict[str, np.ndarray]:
    """{metric: float64 [K]} and ``"AP"``: float64 [C, K], for weights w [K, N]."""
    e = run.eval or {}
    t = apply_difficult(np.asarray(run.targets, np.int8), e.get("difficult", "ignore"))
    p = np.asarray(run.probs, np.float32)
    ap = weighted_ap(p, t, np.ascontiguousarray(w.T), e.get("ap", "noninterpolated"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any positive
        out = {"AP": ap, "mAP": np.nanmean(ap, axis=0)}
    want = [m for m in metrics if m != "mAP"]
    if want:
        k, thr = int(e.get("top_k", 3)), float(e.get("threshold", 0.5))
        gt, pred = t == 1, at_least(p, thr)
        sel = topk_mask(p, k)
        if e.get("topk_mode", "threshold") == "threshold":
            sel &= pred
        plain = weighted_prf(w, pred, gt) if any("@" not in m for m in want) else {}
        topk = weighted_prf(w, sel, gt) if any("@" in m for m in want) else {}
        for m in want:
            key, _, kk = m.partition("@")
            src = topk if kk else plain
            if key not in PRF or (kk and kk != str(k)):
                raise ValueError(f"metric {m!r}: choose mAP or one of {', '.join(PRF)} "
                                 f"(with @{k} for the top-{k} variants)")
            out[m] = src[key]
    return out


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values [m] (step-down, monotone, capped at 1)."""
    p = np.nan_to_num(np.asarray(p, dtype=float), nan=1.0)  # undefined: never significant
    order = np.argsort(p, kind="stable")
    m = len(p)
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def bootstrap_p(d: np.ndarray) -> float:
    """Two-sided p-value from resampled differences d [B] (module docstring)."""
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return float(min(1.0, 2.0 * (1 + tail) / (d.size + 1)))


@dataclass
class Comparison:
    """Result of :func:`compare`: per row (label), per metric."""
    rows: List[str]
    ref: str
    metrics: List[str]
    resamples: int
    value: Dict[str, Dict[str, float]]          # row → metric → full-set value
    delta: Dict[str, Dict[str, float]]          # row − ref on the full set
    ci: Dict[str, Dict[str, tuple]]             # 95% percentile CI of the difference
    p: Dict[str, Dict[str, float]]
    p_holm: Dict[str, Dict[str, float]]
    class_delta: Dict[str, np.ndarray] = field(default_factory=dict)   # row → [C] full-set
    class_ci: Dict[str, np.ndarray] = field(default_factory=dict)      # row → [C, 2]

    def significant(self, row: str, metric: str = "mAP", alpha: float = ALPHA) -> bool:
        """Significantly below the reference (Holm-corrected p < alpha)."""
        if row == self.ref:
            return False
        p = self.p_holm[row].get(metric)
        return p is not None and p < alpha and self.delta[row][metric] < 0


def compare(rows: Dict[str, List[Run]], metrics: Sequence[str] = ("mAP",),
            resamples: int = RESAMPLES, seed: int = 0, ref: Optional[str] = None,
            per_class: bool = False) -> Comparison:
    """Paired bootstrap of every row against ``ref`` (default: the best row in the first
    metric). Every run must hold the same images in the same order with the same targets."""
    metrics = list(dict.fromkeys(metrics)) or ["mAP"]
    runs = [r for rs in rows.values() for r in rs]
    if not runs or any(not rs for rs in rows.values()):
        raise ValueError("compare: every row needs at least one run")
    n = runs[0].targets.shape[0]
    for r in runs:
        if r.probs.shape != runs[0].targets.shape or not np.array_equal(r.targets, runs[0].targets):
            raise ValueError("compare: the runs were evaluated on different images or targets")
    w = np.concatenate([np.ones((1, n), np.uint8), resample_weights(n, resamples, seed)])
    per_row: Dict[str, Dict[str, np.ndarray]] = {}
    for label, rs in rows.items():
        vals = [run_metrics(r, w, metrics) for r in rs]
        per_row[label] = {m: np.mean([v[m] for v in vals], axis=0) for m in metrics + ["AP"]}
    first = metrics[0]
    if ref is None:
        ref = max(rows, key=lambda k: per_row[k][first][0])
    elif ref not in rows:
        raise ValueError(f"--ref {ref!r} is not a row; rows: {', '.join(rows)}")
    out = Comparison(list(rows), ref, metrics, resamples, {}, {}, {}, {}, {})
    for label in rows:
        out.value[label] = {m: float(per_row[label][m][0]) for m in metrics}
        out.delta[label], out.ci[label], out.p[label] = {}, {}, {}
        for m in metrics:
            d = per_row[label][m] - per_row[ref][m]
            out.delta[label][m] = float(d[0])
            out.ci[label][m] = tuple(float(x) for x in np.nanpercentile(d[1:], [2.5, 97.5])) \
                if np.isfinite(d[1:]).any() else (float("nan"), float("nan"))
            out.p[label][m] = float("nan") if label == ref else bootstrap_p(d[1:])
        if per_class:
            dc = per_row[label]["AP"] - per_row[ref]["AP"]      # [C, B+1]
            out.class_delta[label] = dc[:, 0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # classes without positives
                out.class_ci[label] = np.nanpercentile(dc[:, 1:], [2.5, 97.5], axis=1).T
    others = [r for r in rows if r != ref]
    for m in metrics:
        adj = holm([out.p[r][m] for r in others]) if others else []
        for r, a in zip(others, adj):
            out.p_holm.setdefault(r, {})[m] = float(a)
    out.p_holm.setdefault(ref, {})
    return out
