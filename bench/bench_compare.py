"""Paired bootstrap at COCO-val size: gmbench.tables.significance vs a scikit-learn loop.

    PYTHONPATH=$PWD python bench/bench_compare.py [--resamples 1000] [--sk-resamples 3]

Synthetic predictions shaped like COCO val2014 (40,137 images × 80 classes, ~2.9 labels
per image), 2 rows × 3 seeds, float32 as stored in preds/*.npz. gmbench's bootstrap (mAP
only, as ``gmbench compare`` by default) is timed end to end on ``--resamples`` resamples;
the scikit-learn reference re-sorts each resampled dataset (average_precision_score per
class, per run, per resample) and is timed on ``--sk-resamples`` resamples, then scaled
linearly (its cost is the same for every resample). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

N, C, ROWS, SEEDS = 40137, 80, 2, 3


def fake_runs(seed: int = 0):
    rng = np.random.default_rng(seed)
    rate = np.clip(rng.lognormal(np.log(0.025), 1.0, C), 0.002, 0.4)
    t = (rng.random((N, C)) < rate).astype(np.int8)
    rows = {}
    for r in range(ROWS):
        runs = []
        for s in range(SEEDS):
            logit = rng.normal(size=(N, C)) + (2.0 + 0.1 * r) * t - 2.5
            runs.append((1 / (1 + np.exp(-logit))).astype(np.float32))
        rows[f"row{r}"] = runs
    return rows, t


def sklearn_map(p: np.ndarray, t: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score
    aps = [average_precision_score(t[:, c], p[:, c]) for c in range(t.shape[1]) if t[:, c].any()]
    return float(np.mean(aps))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--sk-resamples", type=int, default=3)
    a = ap.parse_args()
    from gmbench.tables.significance import Run, compare, resample_weights
    rows, t = fake_runs()
    t0 = time.perf_counter()
    res = compare({k: [Run(p, t) for p in v] for k, v in rows.items()}, resamples=a.resamples)
    fast = time.perf_counter() - t0
    w = resample_weights(N, a.sk_resamples, 0)
    t0 = time.perf_counter()
    for b in range(a.sk_resamples):
        idx = np.repeat(np.arange(N), w[b])
        for runs in rows.values():
            for p in runs:
                sklearn_map(p[idx].astype(np.float32), t[idx])
    sk = (time.perf_counter() - t0) / a.sk_resamples * a.resamples
    print(json.dumps({"n": N, "c": C, "rows": ROWS, "seeds": SEEDS, "resamples": a.resamples,
                      "gmbench_s": round(fast, 1), "sklearn_s_scaled": round(sk, 1),
                      "sklearn_measured_resamples": a.sk_resamples,
                      "speedup": round(sk / fast, 1), "load1": os.getloadavg()[0],
                      "delta_mAP": res.delta["row0"]["mAP"] if res.ref != "row0"
                      else res.delta["row1"]["mAP"]}))


if __name__ == "__main__":
    main()
