"""`python -m gmbench detector train`: a Faster R-CNN on a training split's box annotations."""
from __future__ import annotations

import argparse
import json
import sys

_EPILOG = """examples:
  python -m gmbench detector train --dataset synthetic --preset synthetic --out runs/det-synth
  python -m gmbench detector train --dataset voc2007 --root /data/VOC --split trainval --out runs/det-voc
  python -m gmbench detector train --dataset coco2014 --root /data/coco --split train \\
      --eval-split val --out runs/det-coco     # a leakage-free detector for the COCO suites
  python -m gmbench extract --dataset voc2007 --root /data/VOC --split test --weights runs/det-voc/detector.pth
A stopped training resumes when the same command is run again."""

# The small trunk and sizes used for the embedded synthetic data: the same settings as the
# detector block of configs/suites/demo.yaml (a test keeps the two equal).
PRESETS = {
    # backbone "synthetic": the default synthetic pretraining (gmbench/pretrain), trained
    # into GMBENCH_CACHE first if absent; the demo trains one detector per seed, this is seed 0's
    "synthetic": {"arch": "resnet18_fpn", "backbone_weights": "synthetic", "trainable_layers": 5,
                  "min_size": 64, "max_size": 64,
                  "anchor_sizes": [8, 16, 24, 32, 48], "fpn_channels": 64,
                  "representation_size": 256, "box_batch_size_per_image": 32,
                  "rpn_batch_size_per_image": 128, "batch_size": 16, "epochs": 3,
                  "lr": 0.02, "lr_steps": [2], "warmup_iters": 16, "num_threads": None},
    "paper": {},  # torchvision's defaults: ResNet-50-FPN, ImageNet trunk, 800/1333, 1x schedule
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("detector", help="train a Faster R-CNN on a training split's boxes")
    sub = p.add_subparsers(dest="detector_command", metavar="ACTION")
    t = sub.add_parser("train", help="train a detector; writes OUT/detector.pth and OUT/record.json",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--dataset", required=True, help="synthetic, voc2007, coco2014 (datasets with boxes)")
    t.add_argument("--root", default=None, help="dataset root folder")
    t.add_argument("--split", default=None, help="training split (default: the dataset's train_split)")
    t.add_argument("--eval-split", default=None,
                   help="split for box AP (default: the dataset's test_split); 'none' to skip")
    t.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option (a data: config field), repeatable")
    t.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                   help="starting settings: paper (ResNet-50-FPN) or synthetic (small ResNet-18-FPN)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="detector setting, e.g. --set epochs=2 (keys: gmbench/detector/config.py)")
    t.add_argument("--out", required=True, help="output folder (checkpoints, detector.pth, record.json)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=run_train)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p


def detector_config(preset: str, overrides):
    from gmbench.config import ConfigError, _explain, parse_set
    from gmbench.detector.config import DetectorTrainConfig
    from pydantic import ValidationError
    raw = dict(PRESETS[preset], **parse_set(overrides))
    try:
        return DetectorTrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_explain(e, DetectorTrainConfig, "detector")) from None


def run_train(args) -> int:
    from pathlib import Path

    from gmbench.cli.data import parse_options
    from gmbench.data import data_config, get_spec
    from gmbench.detector.train import train_detector
    cfg = detector_config(args.preset, args.overrides)  # ConfigError → exit 2 in cli.main
    if cfg.backbone_weights == "synthetic":  # the default pretraining block, as the demo's
        from gmbench import pretrain
        done = pretrain.prepare(pretrain.SyntheticPretrainConfig())
        cfg = cfg.model_copy(update={"backbone_weights": done["weights"]})
    try:
        opts = parse_options(args.option)
        dcfg = data_config(args.dataset, root=args.root, **opts)
        spec = get_spec(args.dataset)
        split = args.split or dcfg.train_split
        ev = args.eval_split or dcfg.test_split
        for s in (split, ev):
            if s != "none" and spec.splits and s not in spec.splits:
                raise ValueError(f"dataset {args.dataset!r} has splits {', '.join(spec.splits)}, "
                                 f"not {s!r}; pass --split/--eval-split with one of them")
        root = spec.prepare_root(dcfg)
        train = spec.read_labels(root, split, dcfg)
        test = None if ev == "none" else spec.read_labels(root, ev, dcfg)
        rec = train_detector(cfg, train, test, Path(args.out), dataset=args.dataset,
                             train_split=split, test_split=None if ev == "none" else ev,
                             data_config=dcfg.model_dump(mode="json"),
                             progress=not args.no_progress and sys.stderr.isatty(),
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ap = rec.get("box_ap") or {}
    print(json.dumps({"weights": rec["weights"], "sha256": rec["sha256"], "arch": rec["arch"],
                      "AP50": ap.get("AP50"), "AP": ap.get("AP"), "timing": rec["timing"]}, indent=1))
    return 0
