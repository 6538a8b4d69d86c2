"""Exact per-class average precision that sorts only the positives.

AP needs, for every positive, how many valid entries of its class score at least
as high. Positives are few (about 3 % of COCO's entries), so only they are
sorted, by (class, score). A negative then only needs its position among its
class's sorted positives, found in two steps:

1. A bucket index per entry, ``trunc(clip(score * scale_c + shift_c))``, with
   ``OVERSAMPLE`` buckets per distinct positive score spread over [lowest,
   highest positive]. Every step of it is monotone in the score (IEEE rounding is), so a
   negative whose bucket holds no positive is above every positive of lower
   buckets and below every one of higher buckets: its position is the bucket's,
   and those negatives are counted per bucket, never one by one.
2. The few negatives that share a bucket with a positive (about 1.5 % on
   COCO-like scores) get a vectorised binary search among the distinct positive
   scores of that bucket.

The counts are exact for any input; only the speed depends on how scores are
spread (with few distinct scores every negative shares a bucket and is searched,
in one step as each bucket then holds one distinct score). Work
runs class-major ([C, N] copies) so each class's bucket table stays in cache.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

OVERSAMPLE = 4  # buckets per distinct positive score (4 and 8 time alike; 4 halves the tables)


def _sorted_positives(s: np.ndarray, fpos: np.ndarray, n: int
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positives sorted by (class, score), from class-major scores ``s`` [C*N].

    Returns (order of fpos, scores, classes). float32 scores sort as one int64
    key (class above the score's bit pattern, which orders like the score for
    non-negative floats); float64 ones by a score argsort then a stable class one.
    """
    cls = fpos // n
    if s.dtype == np.float32:
        key = (cls << 32) | s[fpos].view(np.uint32)
        order = np.argsort(key)
    else:
        order = np.argsort(s[fpos])
        order = order[np.argsort(cls[order].astype(np.int32), kind="stable")]
    return order, s[fpos[order]], cls[order]


def _buckets(s: np.ndarray, c: int, n: int, lo: np.ndarray, hi: np.ndarray,
             n_distinct: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(global bucket id int32/int64 [C*N], buckets per class int64 [C]).

    Class k owns ids off_k .. off_k + nb_k - 1: the first takes scores below its
    lowest positive, the last scores above its highest (clipped).
    """
    inner = np.minimum(OVERSAMPLE * n_distinct, min(n, 1 << 23))  # ids stay exact in float32
    nb = inner + 3
    span = hi.astype(np.float64) - lo
    scale = np.ones(c)
    wide = span > 0
    scale[wide] = np.minimum(inner[wide] / span[wide], 1e30)  # 1e30: finite in float32 too
    scale = scale.astype(s.dtype)
    shift = (1.0 - lo * scale).astype(s.dtype)
    x = s.reshape(c, n) * scale[:, None]
    x += shift[:, None]
    np.clip(x, 0, (nb - 1).astype(s.dtype)[:, None], out=x)
    ids = np.int32 if nb.sum() < 2 ** 31 else np.int64
    gb = x.astype(ids)  # truncation = floor here (x >= 0)
    gb += (np.cumsum(nb) - nb).astype(ids)[:, None]
    return gb.ravel(), nb


def _negatives_per_position(s: np.ndarray, code: np.ndarray, gb: np.ndarray, nb: np.ndarray,
                            fpos: np.ndarray, pv: np.ndarray, group: np.ndarray,
                            c: int, n: int) -> np.ndarray:
    """hist int64 [P + C]: bin first_k + k + j counts class k's negatives that score at
    or above exactly j of its positives (j = 0 .. n_pos_k).

    ``pv`` [P]: positive scores sorted by (class, score), ``fpos`` their entries in
    ``s``; ``group`` [D]: index in ``pv`` of the first of each distinct (class, score).
    The binary search runs over distinct scores, so heavy ties (bf16 outputs) stay cheap.
    """
    total = int(nb.sum())
    cnt = np.bincount(gb[fpos], minlength=total)
    start = np.cumsum(cnt) - cnt  # positives in lower buckets (global index)
    cnt_d = np.bincount(gb[fpos[group]], minlength=total)
    start_d = np.cumsum(cnt_d) - cnt_d
    per_bucket = np.bincount(gb, minlength=total) - cnt
    ignored = np.flatnonzero(code == -1)
    if ignored.size:
        per_bucket -= np.bincount(gb[ignored], minlength=total)
    occupied = cnt > 0
    per_bucket[occupied] = 0  # those negatives are placed one by one below
    hist = np.bincount(start + np.repeat(np.arange(c), nb), weights=per_bucket,
                       minlength=pv.size + c)
    shared = np.flatnonzero(np.take(occupied, gb) & (code == 0))
    if shared.size:
        q = s[shared]
        b = gb[shared]
        dv = pv[group]
        lo = start_d[b]
        hi = lo + cnt_d[b]
        live = np.arange(shared.size)
        while live.size:  # first distinct score > q within [lo, hi)
            mid = (lo[live] + hi[live]) >> 1
            right = dv[mid] <= q[live]
            lo[live] = np.where(right, mid + 1, lo[live])
            hi[live] = np.where(right, hi[live], mid)
            live = live[lo[live] < hi[live]]
        ends = np.append(group[1:], pv.size)  # one past each distinct score's positives
        j = np.where(lo > start_d[b], ends[lo - 1], start[b])
        hist += np.bincount(j + shared // n, minlength=hist.size)
    return hist.astype(np.int64)


def average_precision_block(p: np.ndarray, t: np.ndarray, mode: str
                            ) -> Tuple[np.ndarray, np.ndarray]:
    """Per-class AP for validated float probs and int8 targets [N, C].

    Entries with target -1 are removed. Tied scores form ONE threshold (as in
    scikit-learn's average_precision_score): every positive of a tie group gets
    the precision measured after the whole group, so the result does not depend
    on how ties are ordered. ``mode="voc_interpolated"`` replaces each precision
    by the best precision at any equal-or-higher recall (VOC devkit 2010+).

    Returns (ap float64 [C], NaN where a class has no positive; n_pos int64 [C]).
    """
    n, c = p.shape
    s = np.ascontiguousarray(p.T).ravel()  # [C*N] class-major
    code = np.ascontiguousarray(t.T).ravel()
    fpos = np.flatnonzero(code == 1)
    n_pos = np.bincount(fpos // n, minlength=c)
    if fpos.size == 0:
        return np.full(c, np.nan), n_pos
    order, pv, pk = _sorted_positives(s, fpos, n)
    fpos = fpos[order]
    first = np.cumsum(n_pos) - n_pos  # index of each class's first positive
    # Tie groups: positive i shares its precision with [g_i, e_i] (same class and score).
    m = pv.size
    j = np.arange(m)
    new = np.ones(m, dtype=bool)
    new[1:] = (pv[1:] != pv[:-1]) | (pk[1:] != pk[:-1])
    g = np.maximum.accumulate(np.where(new, j, 0))
    last = np.ones(m, dtype=bool)
    last[:-1] = new[1:]
    e = np.minimum.accumulate(np.where(last, j, m)[::-1])[::-1]
    group = np.flatnonzero(new)

    has = n_pos > 0
    lo = np.zeros(c, s.dtype)
    hi = np.zeros(c, s.dtype)
    lo[has] = pv[first[has]]
    hi[has] = pv[first[has] + n_pos[has] - 1]
    gb, nb = _buckets(s, c, n, lo, hi, np.bincount(pk[group], minlength=c))
    hist = _negatives_per_position(s, code, gb, nb, fpos, pv, group, c, n)
    above = np.zeros(hist.size + 1, dtype=np.int64)
    above[:-1] = np.cumsum(hist[::-1])[::-1]  # above[b] = sum(hist[b:])
    end = first[pk] + n_pos[pk]  # one past the class's last positive
    tp = end - g  # positives scoring >= the group
    fp = above[e + 1 + pk] - above[end + pk + 1]  # negatives scoring >= the group
    prec = tp / (tp + fp)
    if mode == "voc_interpolated":
        # best precision at recall >= this one = over positives scoring <= this one
        rank = j - first[pk]
        env = np.zeros((c, int(n_pos.max())))
        env[pk, rank] = prec
        np.maximum.accumulate(env, axis=1, out=env)
        prec = env[pk, rank]
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.bincount(pk, weights=prec, minlength=c) / n_pos
    return ap, n_pos
