"""`python -m gmbench data {check,prepare}`: thin wrapper over gmbench.data.check/side_info."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

_EPILOG = """examples:
  python -m gmbench data check voc2007 --root /data/VOC
  python -m gmbench data check coco2014 --root /data/coco -o keep_empty=true --no-decode
  python -m gmbench data prepare nuswide --root /data/nuswide --glove glove.6B.300d.txt"""


def parse_options(items: List[str]) -> Dict[str, object]:
    """['class_order=name', 'keep_empty=true'] → {'class_order': 'name', 'keep_empty': True}."""
    import yaml

    out: Dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {item!r}: expected KEY=VALUE, e.g. class_order=name")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="dataset name (voc2007, coco2014, nuswide, synthetic)")
    p.add_argument("--root", default=None, help="dataset root folder")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option (a data: config field), repeatable")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `data` with `check` and `prepare` on an argparse subparsers object."""
    data = subparsers.add_parser("data", help="check or prepare a dataset on disk",
                                 epilog=_EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = data.add_subparsers(dest="data_cmd", metavar="{check,prepare}")
    sub.required = True

    chk = sub.add_parser("check", help="list missing/unreadable images, counts, mismatches")
    _common(chk)
    chk.add_argument("--split", action="append", default=None,
                     help="split to check (repeatable; default: the train and test splits)")
    chk.add_argument("--no-decode", action="store_true",
                     help="only test that files exist (much faster, misses corrupt files)")
    chk.add_argument("--workers", type=int, default=None,
                     help="decoding processes (default: min(8, CPUs))")
    chk.add_argument("--no-progress", action="store_true", help="no progress bar")
    chk.set_defaults(func=run_check)

    prep = sub.add_parser("prepare", help="compute and cache label side information")
    _common(prep)
    prep.add_argument("--glove", default=None, help="GloVe text file (glove.6B.300d.txt or "
                      "glove.840B.300d.txt); without it a seeded random embedding is used")
    prep.add_argument("--embedding-dim", type=int, default=None,
                      help="word vector size (default 300)")
    prep.add_argument("--cache-dir", default=None,
                      help="where to cache (default ROOT/.gmbench)")
    prep.set_defaults(func=run_prepare)
    return data


def run_check(args) -> int:
    from gmbench.data.check import check_dataset, default_workers, format_report

    try:
        opts = parse_options(args.option)
        reports = check_dataset(args.name, args.root, splits=args.split,
                                decode=not args.no_decode,
                                workers=args.workers or default_workers(),
                                progress=not args.no_progress and sys.stderr.isatty(), **opts)
    except (KeyError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(reports))
    return 1 if any(r.problems for r in reports) else 0


def run_prepare(args) -> int:
    from gmbench.data import data_config, get_spec
    from gmbench.data.base import data_cache_dir
    from gmbench.data.side_info import build_data_info

    try:
        opts = parse_options(args.option)
        if args.glove:
            opts["glove"] = args.glove
        if args.embedding_dim:
            opts["embedding_dim"] = args.embedding_dim
        if args.cache_dir:
            opts["cache_dir"] = args.cache_dir
        cfg = data_config(args.name, root=args.root, **opts)
        spec = get_spec(args.name)
        spec.check_root(cfg)  # a root given on the command line is never created
        root = spec.prepare_root(cfg)
        labels = spec.read_labels(root, cfg.train_split, cfg)
        info = build_data_info(labels, cfg, data_cache_dir(cfg, root))
    except (KeyError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.name} / {cfg.train_split}: {info.n_train} images, {info.num_classes} classes")
    print(f"  label ratios r_c: min {info.label_ratios.min():.4f}, "
          f"max {info.label_ratios.max():.4f}")
    print(f"  embeddings: {info.embedding_source} {tuple(info.word_embeddings.shape)}")
    missing = info.extra.get("missing_words") or []
    if missing:
        print(f"  words missing from GloVe: {', '.join(missing)}")
    empty = info.extra.get("classes_without_vector") or []
    if empty:
        print(f"  classes with no GloVe word (random vector): {', '.join(empty)}")
    state = "reused" if info.extra.get("cache_hit") else "written"
    print(f"  cache {state}: {Path(str(info.extra['cache_path']))}")
    return 0
