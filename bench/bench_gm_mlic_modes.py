"""Training-step throughput of GM-MLIC's feature modes (issue 15, item 1), CPU or GPU:
cache (instance features given), online (frozen Faster R-CNN on the batch, then the head)
and e2e (trainable ResNet trunk + RoIAlign on given boxes).

  python bench/bench_gm_mlic_modes.py --size 128 --batch 4 --threads 1

Random init everywhere (weights do not change the cost), paper head (enc 256, [512, 256]),
m = 10 boxes, C = 20 classes; the detector resizes to --det-size (its min/max size).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gmbench.instances.online import build_online_detector
from gmbench.models.gm_mlic import GMMLIC, GMMLICConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--det-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    C, M, B = 20, 10, a.batch
    rng = np.random.default_rng(0)
    word, ratios = rng.standard_normal((C, 300)).astype(np.float32), np.full(C, 0.1)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(B, M, 2, generator=g) * 0.6
    batch = {"image": torch.randn(B, 3, a.size, a.size, generator=g),
             "target": (torch.rand(B, C, generator=g) < 0.2).float(),
             "boxes": torch.cat([xy, xy + 0.3], -1), "box_mask": torch.ones(B, M, dtype=torch.bool),
             "inst_feat": torch.randn(B, M, 1024, generator=g)}
    batch = {k: v.to(dev) for k, v in batch.items()}
    modes = {"cache": {}, "online": dict(detector_weights="none", detector_min_size=a.det_size,
                                        detector_max_size=a.det_size),
             "e2e": dict(depth=101, pretrained="none")}
    for mode, extra in modes.items():
        torch.manual_seed(0)
        cfg = GMMLICConfig(features=mode, top_m=M, backend="dense", **extra)
        model = GMMLIC(cfg, word, ratios).to(dev)
        if mode == "online":
            model.attach_instance_extractor(build_online_detector(cfg.instance_settings()))
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
        times = []
        for step in range(a.steps + 1):
            t0 = time.perf_counter()
            loss = model.loss(model(batch), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if step:  # the first step warms up
                times.append(time.perf_counter() - t0)
        s = float(np.median(times))
        print(f"{mode:7s} batch {B} at {a.size}px (detector {a.det_size}px): {s:.3f} s/step, "
              f"{B / s:.1f} img/s")


if __name__ == "__main__":
    main()
