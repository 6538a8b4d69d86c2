"""`python -m gmbench extract`: per-image instances (detector or annotation boxes) into a cache."""
from __future__ import annotations

import argparse
import os
import sys

_EPILOG = """examples:
  python -m gmbench extract --dataset voc2007 --root /data/VOC --split trainval --top-m 10
  python -m gmbench extract --dataset synthetic --split train --source boxes --weights none
  torchrun --nproc_per_node=8 -m gmbench extract --dataset nuswide --root /data/nus --split train
  python -m gmbench extract --dataset coco2014 --root data/coco2014 --split train --views 4 \
      -o image_size=448 -o train_transform=mlgcn        # views mode: 4 augmented views per image
  python -m gmbench extract --dataset coco2014 --root data/coco2014 --split val --views 1
A stopped extraction resumes when the same command is run again. Run on a finished cache,
it verifies it (--verify full: every file's sha256) and re-extracts only damaged shards.
SIGINT/SIGTERM stop it after the current batch (exit 128 + signal); rerun to resume."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("extract", help="extract top-m instances per image into a cache",
                              epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="voc2007, coco2014, nuswide, synthetic")
    p.add_argument("--root", default=None, help="dataset root folder")
    p.add_argument("--split", required=True, help="split to extract (e.g. train, test, trainval)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option (a data: config field), repeatable")
    p.add_argument("--source", choices=("detector", "boxes"), default="detector",
                   help="Faster R-CNN detections, or annotation boxes + RoIAlign features")
    p.add_argument("--top-m", type=int, default=None,
                   help="instances kept per image (default: the paper's m, 10 on VOC, 35 on "
                        "COCO/NUS-WIDE, else 10)")
    p.add_argument("--weights", default=None, help="detector: coco (default) | none | FILE; "
                   "boxes: imagenet (default) | none | FILE (a ResNet state dict)")
    p.add_argument("--out", default=None, help="cache directory (default: DATA_CACHE/instances/"
                   "SPLIT-SOURCE-mM, DATA_CACHE = data.cache_dir or ROOT/.gmbench)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per detector batch (default 4; with --views 16, as the runner)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="decoding processes (default: min(4, CPUs))")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--shard-size", type=int, default=512, help="images per shard file set")
    p.add_argument("--min-size", type=int, default=None,
                   help="resize: shorter side (default: detector, the size a gmbench weights "
                        "file was trained at, else 800; boxes 448)")
    p.add_argument("--max-size", type=int, default=None, help="resize: longer side cap (1333)")
    p.add_argument("--seed", type=int, default=0, help="init seed for --weights none; boxes jitter")
    g = p.add_argument_group("detector source")
    g.add_argument("--score-thresh", type=float, default=0.0)
    g.add_argument("--rpn-post-nms-top-n", type=int, default=1000)
    g.add_argument("--all-classes", action="store_true",
                   help="torchvision's per-class detections (a proposal may appear once per "
                        "class) instead of one detection per proposal")
    g.add_argument("--views", type=int, default=None, metavar="K",
                   help="model.features=views: the detector on K augmented views of each image "
                        "of the data's train split (its train_transform at image_size, drawn "
                        "per (view seed, view, image)); other splits take --views 1, their "
                        "un-augmented test_transform (docs/instances.md, 'Views mode')")
    g.add_argument("--view-seed", type=int, default=0, help="--views: the seed the views are drawn with")
    g.add_argument("--detector-input", choices=("squashed", "crop"), default="squashed",
                   help="--views: what the detector sees, as model.detector_input")
    g = p.add_argument_group("boxes source")
    g.add_argument("--depth", type=int, default=50, help="ResNet depth of the feature trunk")
    g.add_argument("--jitter", type=float, default=0.0, help="edge jitter, fraction of box side")
    g.add_argument("--n-false", type=int, default=0, help="random false boxes added per image")
    p.add_argument("--max-shards", type=int, default=None,
                   help="stop after writing this many shards per process (rerun to continue)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard an existing cache in --out made with other settings")
    p.add_argument("--verify", choices=("full", "quick", "none"), default="full",
                   help="check of a cache found finished: full = sha256 of every file (one read "
                        "of the cache, about 2 s per GB), quick = manifest, sizes and array "
                        "headers only; damaged shards are re-extracted")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_extract)
    return p


def _device(name: str):
    import torch
    from gmbench.utils.env import resolve_device
    dev = resolve_device(name)
    if dev.type == "cuda" and dev.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def build_source(args, labels, top_m: int, device):
    """The instance source the arguments describe."""
    if args.source == "detector":
        from gmbench.instances.extract import DetectorConfig, DetectorSource
        cfg = DetectorConfig(weights=args.weights or "coco", seed=args.seed,
                             min_size=args.min_size, max_size=args.max_size,
                             score_thresh=args.score_thresh,
                             rpn_post_nms_top_n=args.rpn_post_nms_top_n,
                             rpn_pre_nms_top_n=max(1000, args.rpn_post_nms_top_n),
                             unique_proposals=not args.all_classes)
        return DetectorSource(cfg, top_m, device)
    from gmbench.instances.boxes import BoxesConfig, BoxesSource
    cfg = BoxesConfig(depth=args.depth, weights=args.weights or "imagenet", seed=args.seed,
                      min_size=args.min_size or 448, max_size=args.max_size or 1333,
                      jitter=args.jitter, n_false=args.n_false)
    return BoxesSource(cfg, top_m, device, labels)


def run_extract(args) -> int:
    from pydantic import ValidationError

    from gmbench.utils import dist, signals

    main = True
    try:
        with signals.guard():
            res = _extract(args)
        main = dist.is_main()  # the group is gone after the finally below
    except Exception as e:  # noqa: BLE001  (one clean line for known failures)
        code = _exit_code(e, (ValueError, FileNotFoundError, RuntimeError, ValidationError))
        if code is None:
            raise
        print(f"error: {e}", file=sys.stderr)
        return code
    finally:
        dist.shutdown()
    if main:
        rate = res["n_images"] / res["seconds"] if res["seconds"] > 0 else float("nan")
        status = "complete" if res["complete"] else "INCOMPLETE"
        if res["repaired"]:
            status = (f"repaired ({len(res['repaired'])} damaged shard(s) re-extracted: "
                      f"{', '.join(map(str, res['repaired']))}), {status.lower()}")
        elif res["verified"]:
            status += f" (verified: {res['verified']})"
        print(f"{status}: {res['out']}\n"
              f"  shards written {res['written']}, already done {res['skipped']} (rank 0); "
              f"{res['n_images']} images in {res['seconds']:.1f} s ({rate:.2f} img/s)\n"
              f"  decode {res['decode_s']:.1f} s, transform {res['transform']:.1f} s, "
              f"{args.source} {res['detector']:.1f} s")
    return 0 if res["complete"] else 3


def _exit_code(e: BaseException, bad_input: tuple):
    """A signal (128 + signum), a damaged cache, malformed annotations and unusable weight
    files (1) first, as runtime failures, as in ``run``; then bad input (2); then the other
    failures gmbench explains (a full disk: 1)."""
    from gmbench.cli.core import runtime_error_code
    from gmbench.data import AnnotationError
    from gmbench.instances import CacheError
    from gmbench.models.weights import WeightsError
    from gmbench.utils.signals import Interrupted
    if isinstance(e, (Interrupted, CacheError, AnnotationError, WeightsError)):
        return runtime_error_code(e)
    if isinstance(e, bad_input):
        return 2
    return runtime_error_code(e)


def _extract(args) -> dict:
    from pathlib import Path

    from gmbench.cli.data import parse_options
    from gmbench.data import data_config, get_spec
    from gmbench.instances import DEFAULT_TOP_M, default_cache_dir
    from gmbench.instances.pipeline import run_extraction
    from gmbench.utils import dist

    device = _device(args.device)
    dist.init_from_env(str(device))
    opts = parse_options(args.option)
    cfg = data_config(args.dataset, root=args.root, **opts)
    spec = get_spec(args.dataset)
    spec.check_root(cfg)  # a root given on the command line is never created
    if not dist.is_main():
        dist.barrier()  # rank 0 first: generated datasets are written on first use
    root = spec.prepare_root(cfg)
    if dist.is_main():
        dist.barrier()
    labels = spec.read_labels(root, args.split, cfg)
    top_m = args.top_m if args.top_m is not None else DEFAULT_TOP_M.get(args.dataset, 10)
    if args.views is not None:
        return _extract_views(args, cfg, root, labels, top_m, device)
    out = Path(args.out) if args.out else default_cache_dir(
        Path(cfg.cache_dir) if cfg.cache_dir else root / ".gmbench", args.split, args.source, top_m)
    source = build_source(args, labels, top_m, device)
    workers = args.num_workers if args.num_workers is not None else min(4, os.cpu_count() or 1)
    return run_extraction(labels, out, source, dataset=args.dataset, split=args.split,
                          top_m=top_m, shard_size=args.shard_size, batch_size=args.batch_size or 4,
                          num_workers=workers, max_shards=args.max_shards,
                          overwrite=args.overwrite, verify=args.verify,
                          progress=not args.no_progress and sys.stderr.isatty())


def _extract_views(args, cfg, root, labels, top_m: int, device) -> dict:
    """``--views K``: the views cache the runner reads for model.features=views with the same
    data options and detector (DATA_CACHE/instances/SPLIT-viewsK-mM-DIGEST by default)."""
    from pathlib import Path

    from gmbench.instances.online import build_online_detector
    from gmbench.instances.views import VIEWS_BATCH, augmentation, detector_config, extract, views_dir
    from gmbench.models.instance_settings import InstanceSettings
    train = args.split == cfg.train_split
    if args.source != "detector":
        raise ValueError("--views needs --source detector (views are detections of augmented images)")
    if args.views < 1 or (not train and args.views != 1):
        raise ValueError(f"--views {args.views}: K >= 1 augmented views for the train split "
                         f"{cfg.train_split!r}, exactly 1 (un-augmented) for split {args.split!r}")
    w = args.weights or "coco"
    trained = w not in ("coco", "none") and args.min_size is None and args.max_size is None
    inst = InstanceSettings(features="views", source="detector", top_m=top_m, feat_dim=0,
                            detector_weights=w, detector_seed=args.seed,
                            detector_min_size=args.min_size or 800, detector_max_size=args.max_size or 1333,
                            detector_input=args.detector_input, views=args.views, view_seed=args.view_seed)
    file = w if trained else None  # a detector file at the size it was trained at, as the runner
    det = build_online_detector(inst, file)
    out = Path(args.out) if args.out else views_dir(
        Path(cfg.cache_dir) if cfg.cache_dir else root / ".gmbench", args.split, train,
        augmentation(cfg, train, inst), detector_config(inst, file), top_m)
    return extract(labels, out, det, cfg, inst, train, device, dataset=args.dataset, split=args.split,
                   batch_size=args.batch_size or VIEWS_BATCH, overwrite=args.overwrite,
                   progress=not args.no_progress and sys.stderr.isatty())
