"""Throughput of instance extraction, and where the time goes, per batch size.

Writes synthetic JPEGs (sizes jittered around --image-size) into a temp folder,
then runs the real extraction pipeline (DataLoader → source → atomic shards)
at each batch size into a fresh cache and reports images/s and the split of
time between decoding, the resize/normalise transform and the detector.

  python bench/bench_extract.py                       # CPU, small sizes, random weights
  python bench/bench_extract.py --device cuda --weights coco --images 512 \\
      --image-size 640x480 --min-size 800 --max-size 1333 --workers 8

With --workers > 0 decoding runs in DataLoader processes (pinned memory on
CUDA); then ``wait`` (the loop waiting for decoded images) is the number that
says whether decoding starves the detector: it should be ~0.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gmbench.data.base import LabelSet  # noqa: E402
from gmbench.instances.pipeline import run_extraction  # noqa: E402


def write_images(folder: Path, n: int, size: tuple, seed: int = 0) -> LabelSet:
    """n JPEGs of about ``size`` (w, h) with a few coloured rectangles each, and their boxes."""
    rng = np.random.default_rng(seed)
    paths, boxes, labels = [], [], []
    for i in range(n):
        w, h = (int(s * rng.uniform(0.8, 1.2)) for s in size)
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(img)
        bb = []
        for _ in range(int(rng.integers(1, 5))):
            x1, y1 = rng.uniform(0, w * 0.6), rng.uniform(0, h * 0.6)
            x2, y2 = x1 + rng.uniform(0.1, 0.4) * w, y1 + rng.uniform(0.1, 0.4) * h
            draw.rectangle((x1, y1, x2, y2), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            bb.append((x1, y1, x2, y2))
        p = folder / f"{i:05d}.jpg"
        img.save(p, quality=90)
        paths.append(p)
        boxes.append(np.array(bb, np.float32))
        labels.append(np.zeros(len(bb), np.int64))
    return LabelSet(image_ids=[p.stem for p in paths], class_names=["object"],
                    targets=np.ones((n, 1), np.int8), image_paths=paths, boxes=boxes,
                    box_labels=labels)


def build(args, labels, device):
    if args.source == "detector":
        from gmbench.instances.extract import DetectorConfig, DetectorSource
        cfg = DetectorConfig(weights=args.weights, min_size=args.min_size, max_size=args.max_size,
                             rpn_post_nms_top_n=args.proposals,
                             rpn_pre_nms_top_n=max(1000, args.proposals))
        return DetectorSource(cfg, args.top_m, device)
    from gmbench.instances.boxes import BoxesConfig, BoxesSource
    w = "none" if args.weights == "none" else args.weights.replace("coco", "imagenet")
    return BoxesSource(BoxesConfig(weights=w, min_size=args.min_size, max_size=args.max_size),
                       args.top_m, device, labels)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--source", choices=("detector", "boxes"), default="detector")
    ap.add_argument("--weights", default="none", help="none | coco | FILE")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--image-size", default="320x240", help="WxH of the generated JPEGs")
    ap.add_argument("--min-size", type=int, default=240)
    ap.add_argument("--max-size", type=int, default=400)
    ap.add_argument("--proposals", type=int, default=1000, help="RPN post-NMS proposals")
    ap.add_argument("--top-m", type=int, default=35)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = tuple(int(v) for v in args.image_size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        labels = write_images(Path(tmp), args.images, size)
        source = build(args, labels, device)
        # warm-up: first-call allocations and (on CUDA) cuDNN autotuning stay out of the numbers
        run_extraction(labels.subset(range(min(2, args.images))), Path(tmp) / "warm", source,
                       dataset="bench", split="warm", top_m=args.top_m, batch_size=1,
                       log=lambda m: None)
        for bs in args.batch_sizes:
            t = time.perf_counter()
            r = run_extraction(labels, Path(tmp) / f"bs{bs}", source, dataset="bench",
                               split="x", top_m=args.top_m, shard_size=64, batch_size=bs,
                               num_workers=args.workers, log=lambda m: None)
            wall = time.perf_counter() - t
            busy = r["decode_s"] + r["transform"] + r["detector"]
            rows.append({"batch": bs, "img_per_s": args.images / r["seconds"], "wall_s": wall,
                         "decode_s": r["decode_s"], "transform_s": r["transform"],
                         "detector_s": r["detector"], "wait_s": r["wait_s"], "write_s": r["write_s"],
                         "decode_transform_share": (r["decode_s"] + r["transform"]) / busy,
                         "detector_share": r["detector"] / busy})
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, " \
        f"{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}"
    print(f"{args.source}, weights={args.weights}, {args.images} JPEGs ~{args.image_size}, "
          f"resize {args.min_size}/{args.max_size}, {args.proposals} proposals, m={args.top_m}, "
          f"workers={args.workers}; {dev}; torch {torch.__version__}")
    print("| batch | img/s | decode s | transform s | detector s | wait s | decode+transform share | detector share |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['batch']} | {r['img_per_s']:.2f} | {r['decode_s']:.2f} | {r['transform_s']:.2f} | "
              f"{r['detector_s']:.2f} | {r['wait_s']:.2f} | {100 * r['decode_transform_share']:.1f}% | "
              f"{100 * r['detector_share']:.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev, "args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
