"""Time gmbench.metrics.evaluate at COCO-val size against a per-class sklearn loop.

    .venv/bin/python bench/bench_metrics.py [--repeats 7] [--n 40137] [--c 80]

Data: fixed seed, label density 3.5 %, probs = sigmoid(logits) with positives
scored higher than negatives (roughly like a trained model), in float32 (what
models output) and in float64. Prints
best-of-``repeats`` wall time and CPU time of each variant, and checks that the
AP values agree with scikit-learn. The target is evaluate() <= 0.1 s on the
project's 2-core CPU; the sklearn loop computes AP only.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from gmbench.metrics import core, evaluate


def make_data(n: int, c: int, seed: int = 0, density: float = 0.035):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < density).astype(np.int8)
    logits = rng.normal(-3.0, 1.5, (n, c)) + 4.5 * targets
    probs64 = 1.0 / (1.0 + np.exp(-logits))
    return probs64.astype(np.float32), probs64, targets


def best_of(fn, repeats: int):
    """(best wall s, best CPU s of this process, last result)."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus), out


def sklearn_loop(probs, targets):
    from sklearn.metrics import average_precision_score
    return [average_precision_score(targets[:, k] == 1, probs[:, k])
            for k in range(probs.shape[1])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40137)
    ap.add_argument("--c", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    probs, p64, targets = make_data(args.n, args.c)  # p64: not float32-exact (64-bit keys)
    evaluate(probs, targets)  # warm-up (page faults, thread pool)

    rows = []
    threads = core._n_threads()
    rows.append((f"evaluate, float32 probs, {threads} threads",)
                + best_of(lambda: evaluate(probs, targets), args.repeats))
    os.environ["GMBENCH_METRIC_THREADS"] = "1"
    rows.append(("evaluate, float32 probs, 1 thread",)
                + best_of(lambda: evaluate(probs, targets), args.repeats))
    del os.environ["GMBENCH_METRIC_THREADS"]
    rows.append((f"evaluate, float64 probs, {threads} threads",)
                + best_of(lambda: evaluate(p64, targets), args.repeats))
    rows.append(("evaluate voc_interpolated + pure top-k",)
                + best_of(lambda: evaluate(probs, targets, ap="voc_interpolated",
                                           topk_mode="pure"), args.repeats))
    sk = best_of(lambda: sklearn_loop(probs, targets), max(2, args.repeats // 2))
    rows.append(("sklearn average_precision_score loop (AP only)",) + sk)

    ours = np.array(rows[0][3]["AP"])
    diff = float(np.max(np.abs(ours - np.array(sk[2]))))
    width = max(len(r[0]) for r in rows)
    print(f"N={args.n} C={args.c} density={targets.mean():.4f} repeats={args.repeats} "
          f"mAP={rows[0][3]['mAP']:.4f}")
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} usable cores, load avg {os.getloadavg()[0]:.2f}")
    print(f"{'variant':<{width}}  wall best (s)  CPU best (s)  sklearn/wall")
    for name, wall, cpu, _ in rows:
        print(f"{name:<{width}}  {wall:13.4f}  {cpu:12.4f}  {sk[0] / wall:11.1f}x")
    print(f"max |AP - sklearn AP| = {diff:.2e}")
    if diff > 1e-9:
        raise SystemExit("AP disagrees with scikit-learn")


if __name__ == "__main__":
    main()
