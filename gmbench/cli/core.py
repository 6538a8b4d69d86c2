"""``run``, ``list`` and ``table`` sub-commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub) -> None:
    r = sub.add_parser("run", help="run every row of a suite (default: the demo suite)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("--suite", default="demo",
                   help="a suite name (configs/suites/NAME.yaml; `gmbench list` shows them) or the "
                        "path of a suite YAML (format: docs/adding_a_method.md)")
    r.add_argument("--rows", action="append", default=[], metavar="PATTERN",
                   help="run and table only the rows whose label or method matches this glob "
                        "(repeatable), e.g. --rows 'ResNet*' --rows ml_gcn")
    r.add_argument("--out", default="results", help="output directory; results go to OUT/SUITE/")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value: every row (--set train.epochs=2), rows whose "
                        "label matches a glob (--set 'ResNet*:model.pool=avg'), or the rows of "
                        "one method (--set ml_gcn.model.tau=0.3)")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    r.add_argument("--dry-run", action="store_true", help="print the resolved plan; touch no data")
    r.add_argument("--offline", action="store_true", help="never download (as GMBENCH_OFFLINE=1): "
                   "exit 1 naming any missing file and the `gmbench fetch` command that gets it")
    r.add_argument("--format", default="csv,md", help="table formats: any of csv,md,tex")
    r.add_argument("--resume", action="store_true",
                   help="continue unfinished runs from their last checkpoint (also the default)")
    r.add_argument("--wait", action="store_true",
                   help="if another gmbench run holds OUT/SUITE, wait for it instead of exiting")
    r.add_argument("--replace", action="store_true",
                   help="rows recorded with other settings: move their old records to "
                        "runs.superseded.jsonl and train anew (default: refuse, exit 2)")
    r.set_defaults(func=cmd_run)

    ls = sub.add_parser("list", help="list suites, methods, datasets, losses, optimizers, "
                                     "schedules and augmentation presets (with their settings)")
    ls.set_defaults(func=cmd_list)

    t = sub.add_parser("table", help="re-render the tables of OUT/SUITE from runs.jsonl alone")
    t.add_argument("suite_dir", help="e.g. results/demo")
    t.add_argument("--format", default="csv,md", help="any of csv,md,tex")
    t.add_argument("--select", choices=["final", "best"], default=None,
                   help="epoch each run contributes: final (default, or the suite's "
                        "table.select) or best (the best test epoch: selection on the test split)")
    t.add_argument("--std", choices=["auto", "suffix", "row", "off"], default="auto",
                   help="std in LaTeX: after the mean, on its own line, or not at all (auto: "
                        "whatever fits the page); Markdown: off or in the cell")
    t.add_argument("--delta", choices=["auto", "suffix", "row", "off"], default="auto",
                   help="difference to the published value, placed like --std")
    t.add_argument("--marks", choices=["separate", "joint", "off"], default="separate",
                   help="best/second marks ranked among published and reproduced rows "
                        "separately (the paper keeps its own marks), jointly, or none")
    t.add_argument("--ci", action="store_true",
                   help="add a column with each row's mAP difference to the best row and its "
                        "95%% bootstrap CI (Markdown, LaTeX; the CSV always has it)")
    t.set_defaults(func=cmd_table)


def _formats(text: str):
    from ..config import ConfigError
    fmts = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in fmts if f not in ("csv", "md", "tex")]
    if bad:
        raise ConfigError(f"--format: unknown format(s) {', '.join(bad)}; choose from csv, md, tex")
    return fmts


def cmd_run(args) -> int:
    from .. import runner
    from ..utils import dist
    from ..utils.env import resolve_device
    fmts = _formats(args.format)
    from ..selection import select_rows, split_overrides
    suite = select_rows(runner.load_suite(args.suite), args.rows)
    common, per_row = split_overrides(args.overrides, suite)
    runs = runner.plan(suite, common, device=args.device, row_overrides=per_row)
    out = Path(args.out)
    from .fetch import offline_gate
    if args.dry_run:
        print(runner.describe_plan(suite, runs, out))
        return offline_gate(args, runs)
    if offline_gate(args, runs):  # offline: nothing may be downloaded inside a job
        return 1
    from ..data import check_roots
    check_roots(r.cfg.data for r in runs)  # a missing dataset exits 2 before any row trains
    dist.init_from_env(str(resolve_device(runs[0].cfg.device)) if runs else "cpu")
    main = dist.is_main()  # the group is gone after the finally below
    log = print if main else (lambda *a, **k: None)
    try:
        suite_dir = runner.run_suite(suite, runs, out, fmts, log=log, wait=args.wait,
                                     replace=args.replace)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (one clean line for known failures)
        code = runtime_error_code(e)
        if code is None:
            raise
        print(f"error: {e}", file=sys.stderr)
        return code
    finally:
        dist.shutdown()
    if main:
        for f in fmts:
            print(f"wrote {suite_dir / f'table.{f}'}")
        print(_printed_table(suite_dir, suite, args.rows))
        from ..compare import against_snapshot
        diff = against_snapshot(suite.name, suite_dir)
        if diff:
            print(diff)
    return 0


def _printed_table(suite_dir: Path, suite, patterns) -> str:
    """The Markdown table to print: the folder's table.md, or with ``--rows`` a table of the
    selected rows only (its marks and notes compare those rows; the files keep all rows)."""
    if not patterns:
        return (suite_dir / "table.md").read_text() if (suite_dir / "table.md").exists() else ""
    from ..tables.write import render_markdown
    labels = [r.label for r in suite.rows]
    return (render_markdown(suite_dir, labels)
            + f"\n(--rows: {len(labels)} row(s) shown; {suite_dir / 'table.md'} tables every "
              f"row of the folder)\n")


def runtime_error_code(e: BaseException):
    """Exit code for a failure gmbench explains in one line (None: an unexpected bug).

    A signal → 128 + signum; known runtime failures (diverged training, corrupt or
    missing files, untrusted weights, a full disk, a busy results folder) → 1. Bad
    settings (ConfigError, exit 2) are handled by ``cli.main``.
    """
    from ..utils.checkpoint import CheckpointError
    from ..config import ConfigError
    from ..data import AnnotationError
    from ..data.dataset import BadImageError
    from ..engine import TrainingDiverged
    from ..instances.cache import CacheError
    from ..models.weights import WeightsError
    from ..utils.io import RecordsError
    from ..utils.lock import FolderLocked
    from ..utils.signals import Interrupted
    from ..utils.tracking import MissingTensorBoard
    if isinstance(e, Interrupted):
        return 128 + e.signum
    if isinstance(e, ConfigError):
        return None
    if isinstance(e, MissingTensorBoard):
        return 2
    if isinstance(e, (TrainingDiverged, CacheError, BadImageError, CheckpointError, RecordsError,
                      FolderLocked, AnnotationError, WeightsError, OSError)):
        return 1
    return None


def cmd_list(args) -> int:
    from ..config import available
    from ..recipes.settings import LossCommon, OptimCommon
    from ..registry import AUGMENTATIONS, LOSSES, OPTIMIZERS, SCHEDULES, list_datasets, list_models
    print("suites:   " + ", ".join(available("suites")))
    print("methods:  " + ", ".join(available("methods")) + "   (method configs)")
    print("models:   " + ", ".join(list_models()) + "   (registered methods)")
    print("datasets: " + ", ".join(list_datasets()))
    common = {"loss": ", ".join(LossCommon.model_fields), "optim": ", ".join(OptimCommon.model_fields)}
    print(f"loss: block, every loss: {common['loss']} (loss.name: default = the method's own loss)")
    print(f"optim: block, every optimizer and schedule: {common['optim']}")
    for title, reg, where in (("losses", LOSSES, "loss.name; settings: loss.KEY"),
                              ("optimizers", OPTIMIZERS, "optim.name; settings: optim.KEY"),
                              ("schedules", SCHEDULES, "optim.scheduler; settings: optim.KEY"),
                              ("augmentation presets", AUGMENTATIONS,
                               "data.train_transform / data.test_transform; settings: "
                               "build_transform arguments")):
        print(f"{title} ({where}):")
        for name in reg.names():
            keys = reg.settings_keys(name)
            print(f"  {name:<12} " + (", ".join(keys) if keys else "-"))
    return 0


def cmd_table(args) -> int:
    from ..tables import write_tables
    d = Path(args.suite_dir)
    if not (d / "runs.jsonl").exists():
        print(f"error: {d / 'runs.jsonl'} not found; give the suite directory, e.g. results/demo",
              file=sys.stderr)
        return 2
    from ..tables import TableError
    try:
        written = write_tables(d, _formats(args.format), select=args.select, std=args.std,
                               delta=args.delta, marks=args.marks, ci=args.ci)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote {p}")
    return 0
