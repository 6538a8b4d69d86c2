"""``run``, ``list`` and ``table`` sub-commands."""
from __future__ import annotations

import argparse
import os
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
                   help="also wait for runs that other processes hold (taking over any whose "
                        "holder dies), so that the tables are complete on return; with "
                        "--launcher slurm: wait for the submitted jobs")
    f = r.add_argument_group("fan-out (docs: README, 'Many GPUs and clusters')")
    f.add_argument("--workers", type=int, default=1, metavar="N",
                   help="N worker processes on this machine drain the suite's runs (one GPU "
                        "each, or cores // N threads each on CPU)")
    f.add_argument("--gpus-per-run", type=int, default=1, metavar="G",
                   help="each run under DDP on G GPUs (workers: torchrun; SLURM: G tasks)")
    f.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="slurm: submit the unfinished runs as one job array (submitit)")
    f.add_argument("--lease", type=float, default=120.0, metavar="S",
                   help="a run whose holder has not beaten for S seconds is taken over")
    f.add_argument("--partition", default=None, help="SLURM partition")
    f.add_argument("--time-limit", default="1440", metavar="T",
                   help="SLURM time limit per run: minutes, H:MM:SS or D-HH:MM:SS")
    f.add_argument("--cpus-per-run", type=int, default=None, metavar="C",
                   help="SLURM CPUs per task (default: data.num_workers + 1)")
    f.add_argument("--mem-gb", type=float, default=None, help="SLURM memory per run (GB)")
    f.add_argument("--account", default=None, help="SLURM account")
    f.add_argument("--constraint", default=None, help="SLURM node constraint")
    f.add_argument("--max-parallel", type=int, default=None, metavar="K",
                   help="at most K runs at once (the array's %%K throttle)")
    # internal: a child of --workers (the parent prepared the folder) and its launch time
    r.add_argument("--worker-of", type=int, default=0, help=argparse.SUPPRESS)
    r.add_argument("--since", type=float, default=None, help=argparse.SUPPRESS)
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
    t.add_argument("--select", choices=["final", "best", "best_of_ema"], default=None,
                   help="epoch each run contributes: final (default, or the suite's "
                        "table.select), best (the best test epoch: selection on the test split) "
                        "or best_of_ema (the better of raw and EMA model at the best epoch, the "
                        "ASL/ML-Decoder authors' rule; also selection on the test split)")
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
    from ..utils.download import OFFLINE_ENV
    if args.dry_run:
        from ..launch.cost import describe_cost
        from ..records import finished_records
        print(runner.describe_plan(suite, runs, out))
        print(describe_cost(runs, set(finished_records(out / suite.name / "runs.jsonl"))))
        return offline_gate(args, runs)
    if args.launcher == "slurm" and OFFLINE_ENV not in os.environ:
        # compute nodes often have no internet: jobs never download, and what they would
        # need is named here, before submitting (GMBENCH_OFFLINE=0 lets jobs download)
        args.offline = True
    if offline_gate(args, runs):  # offline: nothing may be downloaded inside a job
        return 1
    from ..data import check_roots
    check_roots(r.cfg.data for r in runs)  # a missing dataset exits 2 before any row trains
    if args.launcher == "slurm" or ((args.workers > 1 or args.gpus_per_run > 1) and not args.worker_of):
        return _fan_out(args, suite, runs, out, fmts)
    dist.init_from_env(str(resolve_device(runs[0].cfg.device)) if runs else "cpu")
    main = dist.is_main()  # the group is gone after the finally below
    log = print if main else (lambda *a, **k: None)
    try:
        suite_dir = runner.run_suite(suite, runs, out, fmts, log=log, wait=args.wait,
                                     replace=args.replace, lease_s=args.lease,
                                     keep_going=bool(args.worker_of), since=args.since,
                                     prepared=bool(args.worker_of))
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
    if main and args.worker_of:
        return 0  # the launcher reports
    if main:
        _report_unfinished(suite_dir, runs)
        for f in fmts:
            if (suite_dir / f"table.{f}").exists():
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


def _fan_out(args, suite, runs, out: Path, fmts) -> int:
    """--workers N (several processes here) or --launcher slurm (one job array)."""
    from ..utils.env import resolve_device
    cuda = bool(runs) and resolve_device(runs[0].cfg.device).type == "cuda"
    if args.launcher == "slurm":
        from ..launch.slurm import SlurmOptions, parse_time, submit, wait_jobs
        if args.replace:
            from ..launch.queue import prepare
            prepare(suite.name, runs, out / suite.name, True)
        cpus = args.cpus_per_run or (max(r.cfg.data.num_workers for r in runs) + 1 if runs else 1)
        opts = SlurmOptions(partition=args.partition, time_min=parse_time(args.time_limit),
                            gpus_per_run=args.gpus_per_run if cuda else 0, cpus_per_run=cpus,
                            mem_gb=args.mem_gb, account=args.account, constraint=args.constraint,
                            max_parallel=args.max_parallel, lease_s=args.lease)
        from ..runner import run_suite
        submit(run_suite, suite, runs, out, opts, fmts)
        if not args.wait:
            return 0
        wait_jobs(out / suite.name, runs)
        code = 0
    else:
        from ..launch.workers import run_workers
        child = ["run", "--suite", args.suite, "--out", str(out), "--format", args.format,
                 "--lease", str(args.lease)]
        for p in args.rows:
            child += ["--rows", p]
        for o in args.overrides:
            child += ["--set", o]
        if args.device:
            child += ["--device", args.device]
        if args.wait:
            child.append("--wait")
        if args.offline:
            child.append("--offline")
        code = run_workers(suite, runs, out, child, args.workers, args.gpus_per_run, cuda,
                           replace=args.replace)
    suite_dir = out / suite.name
    from ..records import finished_records
    if finished_records(suite_dir / "runs.jsonl"):
        from ..tables import write_tables
        for p in write_tables(suite_dir, fmts):
            print(f"wrote {p}")
    _report_unfinished(suite_dir, runs)
    if code == 0:
        print((suite_dir / "table.md").read_text() if (suite_dir / "table.md").exists() else "")
    return code


def _report_unfinished(suite_dir: Path, runs) -> None:
    from ..records import finished_records
    done = finished_records(suite_dir / "runs.jsonl")
    left = [r for r in runs if r.run_id not in done]
    if left:
        print(f"{len(left)} of {len(runs)} runs are not finished (held by other processes, "
              f"failed or stopped): `python -m gmbench status {suite_dir}`")


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
    from ..launch.queue import RunsFailed
    from ..models.weights import WeightsError
    from ..utils.io import RecordsError
    from ..utils.signals import Interrupted
    from ..utils.tracking import MissingTensorBoard
    if isinstance(e, Interrupted):
        return 128 + e.signum
    if isinstance(e, ConfigError):
        return None
    if isinstance(e, MissingTensorBoard):
        return 2
    if isinstance(e, (TrainingDiverged, CacheError, BadImageError, CheckpointError, RecordsError,
                      AnnotationError, WeightsError, OSError, RunsFailed)):
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
