"""``compare`` sub-command: paired bootstrap of a suite's rows (gmbench.tables.report)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub) -> None:
    c = sub.add_parser("compare", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="each row's difference to the best row, with 95%% CIs and p-values "
                            "(paired bootstrap over the test images)")
    c.add_argument("suite_dir", help="a suite folder with runs.jsonl and preds/, e.g. results/demo")
    c.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    c.add_argument("--ref", default=None, metavar="LABEL",
                   help="the reference row (default: the row with the best first metric)")
    c.add_argument("--seed", type=int, default=0, help="seed of the resamples")
    c.add_argument("--metrics", default="mAP",
                   help="comma-separated: mAP and any of CP,CR,CF1,OP,OR,OF1 (with @K for "
                        "top-K, K = eval.top_k), e.g. mAP,CF1,OF1@3")
    c.add_argument("--per-class", action="store_true",
                   help="also write each class's AP difference with its 95%% CI, sorted, to "
                        "SUITE_DIR/compare_per_class.csv and .svg/.pdf")
    c.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from ..config import ConfigError
    from ..tables import TableError
    from ..tables.report import compare_suite
    from ..tables.write import finished
    d = Path(args.suite_dir)
    if not (d / "runs.jsonl").exists():
        print(f"error: {d / 'runs.jsonl'} not found; give the suite directory, e.g. results/demo",
              file=sys.stderr)
        return 2
    if args.resamples < 1:
        raise ConfigError(f"--resamples must be >= 1, got {args.resamples}")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    try:
        compare_suite(d, finished(d), metrics, args.resamples, args.seed, args.ref,
                      args.per_class)
    except (TableError, ValueError) as e:
        from ..utils.io import RecordsError
        if isinstance(e, RecordsError):
            raise   # a tampered predictions file: exit 1 (cli.main)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
