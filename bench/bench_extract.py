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
import torch
from PIL import Image, ImageDraw

from gmbench.data.base import LabelSet
from gmbench.instances.pipeline import run_extraction


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


def _rss_mb() -> float:
    """Private (anonymous) resident memory; mapped cache pages are reclaimable and not in it."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024


def _time_checks(root: Path, repeats: int = 3) -> dict:
    """Seconds (best of ``repeats``, files in the page cache) of the quick and full checks
    and of an ``open_cache`` whose verified.json stamp still holds."""
    from gmbench.instances import open_cache
    from gmbench.instances.verify import STAMP, verify_cache
    manifest = json.loads((root / "manifest.json").read_text())
    out = {}
    for key, fn in (("quick_s", lambda: verify_cache(root, manifest, "quick")),
                    ("full_s", lambda: verify_cache(root, manifest, "full")),
                    ("open_stamped_s", lambda: open_cache(root))):
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        out[key] = best
    assert (root / STAMP).is_file()
    return out


def bench_reader(n_images: int, m: int, shard_size: int = 512, feat_dim: int = 1024) -> dict:
    """Write a fake cache of n_images x m instances, then time open + random lookups."""
    from gmbench.instances import cache as C
    from gmbench.instances import open_cache
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = [f"{i:07d}" for i in range(n_images)]
        plan = {"dataset": "fake", "split": "x", "source": "detector", "top_m": m,
                "feat_dim": feat_dim, "shard_size": shard_size, "identity": "fake",
                "settings": {}, "ids_sha256": C.ids_digest(ids)}
        metas = []
        for s, (a, b) in enumerate(C.shard_ranges(n_images, shard_size)):
            res = [{"boxes_px": np.tile([1, 2, 30, 40], (k, 1)), "labels": np.ones(k),
                    "scores": np.ones(k), "size": (64, 48),
                    "feat": rng.standard_normal((k, feat_dim), dtype=np.float32)}
                   for k in rng.integers(m // 2, m + 1, b - a)]
            metas.append(C.write_shard(root / "shards", s, a, b, ids[a:b],
                                       C.pack_shard(res, feat_dim), "fake"))
        C.write_manifest(root, plan, ids, metas, {})
        size_gb = sum(f.stat().st_size for f in (root / "shards").glob("*.npy")) / 1e9
        os.system("sync")
        rss0, t = _rss_mb(), time.perf_counter()
        cache = open_cache(root, ids, verify="quick")
        t_open, rss_open = time.perf_counter() - t, _rss_mb() - rss0
        checks = _time_checks(root)
        order = rng.integers(0, n_images, 20000)
        t = time.perf_counter()
        for i in order:
            cache[int(i)]
        t_rand = (time.perf_counter() - t) / len(order)
        return {"images": n_images, "m": m, "gb": size_gb, "open_s": t_open, **checks,
                "rss_after_open_mb": rss_open, "lookup_us": 1e6 * t_rand,
                "rss_after_lookups_mb": _rss_mb() - rss0}


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
    ap.add_argument("--reader-images", type=int, default=0,
                    help="instead: time the cache reader on a fake cache of this many images")
    args = ap.parse_args()
    if args.reader_images:
        r = bench_reader(args.reader_images, args.top_m)
        print(f"reader: {r['images']} images x <= {r['m']} instances, {r['gb']:.2f} GB on disk; "
              f"open {r['open_s']:.2f} s (+{r['rss_after_open_mb']:.0f} MB anon RSS); random lookup "
              f"{r['lookup_us']:.0f} us/image (+{r['rss_after_lookups_mb']:.0f} MB anon RSS after "
              f"20k lookups)\nverification: quick {r['quick_s']:.3f} s, full (sha256) "
              f"{r['full_s']:.2f} s ({r['full_s'] / r['gb']:.2f} s/GB), open with a valid stamp "
              f"{r['open_stamped_s']:.3f} s")
        return 0
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
