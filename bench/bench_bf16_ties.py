"""How much bfloat16-rounded scores lower gmbench's mAP (tied scores form one threshold)
relative to codebases that break ties by sort order (issue 15, items 3 and 5).

  python bench/bench_bf16_ties.py

Simulation: N images × C classes, positives at rate r, logits ~ N(±d/2, 1); probs =
sigmoid(logits) in float32, or sigmoid of the logits rounded to bfloat16 (what a bf16 head
hands the metric layer). AP by gmbench (ties = one threshold) and by a sort-order loop
(np.argsort(-scores), stable: SSGRL/Q2L; ML-GCN's torch.sort orders ties arbitrarily).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from gmbench.metrics import evaluate


def sort_order_ap(p: np.ndarray, t: np.ndarray) -> float:
    """mAP with ties broken by a stable descending argsort (precision at each positive)."""
    aps = []
    for c in range(p.shape[1]):
        y = t[np.argsort(-p[:, c], kind="stable"), c]
        hits = np.cumsum(y)
        if hits[-1]:
            aps.append(float(np.mean(hits[y == 1] / (np.flatnonzero(y == 1) + 1))))
    return float(np.mean(aps))


def main() -> None:
    warnings.simplefilter("ignore")
    print("N, C, rate, d | mAP fp32 | bf16: gmbench, sort-order, gap (points) | tied share")
    for n, c, rate, d in ((5000, 80, 0.03, 2.0), (5000, 80, 0.03, 3.0), (5000, 20, 0.07, 3.0),
                          (40000, 80, 0.03, 3.0)):
        rng = np.random.default_rng(0)
        t = (rng.random((n, c)) < rate).astype(np.int8)
        logits = torch.from_numpy(rng.standard_normal((n, c)) + d * (t - 0.5)).float()
        p32 = torch.sigmoid(logits).numpy()
        p16 = torch.sigmoid(logits.bfloat16().float()).numpy()
        m32 = evaluate(p32, t)["mAP"]
        g16, s16 = evaluate(p16, t)["mAP"], sort_order_ap(p16, t)
        tied = np.mean([1 - len(np.unique(p16[:, k])) / n for k in range(c)])
        print(f"{n}, {c}, {rate}, {d} | {100 * m32:.3f} | {100 * g16:.3f}, {100 * s16:.3f}, "
              f"{100 * (s16 - g16):.3f} | {tied:.2f}")


if __name__ == "__main__":
    main()
