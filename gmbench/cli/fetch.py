"""``gmbench fetch``: download and verify, ahead of time, everything a suite's runs read.

``fetch --suite NAME`` plans like ``run --suite NAME`` (same configs, ``--set`` and ``--root``)
and gets every official file the runs would miss: the dataset archives (unpacked into the
official layout, then ``gmbench data check``), the GloVe file, and torchvision's weights in the
torch hub cache. ``fetch DATASET ...`` does the same for named datasets, GloVe file names or
weight enums. ``offline_gate`` is ``run``'s check under ``GMBENCH_OFFLINE=1`` / ``--offline``:
nothing is downloaded inside a job; what is missing is named with the command that gets it.
Catalogue: gmbench/data/sources.py; engine: gmbench/utils/download.py; docs/data.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

_EPILOG = """examples:
  python -m gmbench fetch --suite coco_table2 --dry-run     # files, sizes, sources, checksums
  python -m gmbench fetch --suite voc_table1                # then: run --suite voc_table1
  python -m gmbench fetch voc2007 --root /data/voc2007 --from /mnt/usb/archives
  python -m gmbench fetch glove.6B.300d.txt ResNet101_Weights.IMAGENET1K_V1"""


def add_parser(sub) -> None:
    f = sub.add_parser("fetch", help="download and verify the data and weights a suite needs",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("names", nargs="*", metavar="DATASET",
                   help="voc2007, coco2014, nuswide, a GloVe file (glove.6B.300d.txt or a path "
                        "ending in it) or a weights enum (ResNet101_Weights.IMAGENET1K_V1)")
    f.add_argument("--suite", help="fetch what every run of this suite reads (as `run --suite`)")
    f.add_argument("--root", help="dataset root (for a suite: --set data.root=ROOT on every row)")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="as for `run` (e.g. data.glove=/data/glove/glove.6B.300d.txt)")
    f.add_argument("--mirror", action="append", default=[], metavar="URL",
                   help="base URL tried before the official host: URL/<file name> (repeatable)")
    f.add_argument("--from", dest="from_dirs", action="append", default=[], metavar="DIR",
                   help="folder of archives copied by hand, used instead of downloading "
                        "(checked all the same; repeatable)")
    f.add_argument("--dry-run", action="store_true",
                   help="print each file, its size, source and checksum; download nothing")
    f.add_argument("--keep-archives", action="store_true",
                   help="keep the downloaded archives after unpacking (default: delete)")
    f.add_argument("--no-decode", action="store_true",
                   help="`data check` afterwards only tests that images exist (faster)")
    f.add_argument("--retries", type=int, default=3, help="resumed retries per URL")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    f.set_defaults(func=cmd_fetch)


@dataclass
class Task:
    """One file to have: ``dest`` is where the download lands; ``item`` unpacks it (None: the
    file itself is the result, e.g. weights in the hub cache)."""
    archive: object        # gmbench.data.sources.Archive
    dest: Path
    item: object = None    # gmbench.data.sources.Item or None
    needs: List[str] = field(default_factory=list)

    def present(self) -> bool:
        return self.item.present() if self.item is not None else self.dest.is_file()


@dataclass
class Plan:
    tasks: Dict[Path, Task] = field(default_factory=dict)
    unfetchable: List[Tuple[str, str]] = field(default_factory=list)  # (what, why), missing
    notes: List[str] = field(default_factory=list)

    def add(self, archive, dest: Path, item=None, need: str = "") -> None:
        t = self.tasks.setdefault(Path(dest).absolute(), Task(archive, Path(dest), item))
        if need and need not in t.needs:
            t.needs.append(need)

    def cannot(self, what: str, why: str) -> None:
        if (what, why) not in self.unfetchable:
            self.unfetchable.append((what, why))

    def todo(self) -> List[Task]:
        return [t for t in self.tasks.values() if not t.present()]


def _add_dataset(plan: Plan, name: str, root, splits, need: str) -> None:
    from ..data.sources import NotFetchable, dataset_items
    if not root:
        plan.cannot(f"dataset {name}", "data.root is not set; give --root DIR")
        return
    try:
        for it in dataset_items(name, Path(root).expanduser(), splits):
            plan.add(it.archive, it.download_path, it, need)
    except NotFetchable as e:
        if str(e) not in plan.notes:
            plan.notes.append(str(e))
        plan.cannot(f"dataset {name} under {root}", "no official download")


GLOVE_DIR = Path("data/glove")  # configs/datasets/*.yaml: data.glove
_OWN = "a file of your own that gmbench cannot download"


def _add_file(plan: Plan, what: str, path: Path, need: str) -> None:
    """A side file of a run (GloVe, weights, instance cache, a user's file)."""
    from ..data.sources import NotFetchable, glove_item
    from ..models import hub_files
    path = Path(path).expanduser()
    enum = hub_files.enum_for_path(path)
    if enum is not None:
        plan.add(hub_files.weights_archive(enum), path, None, need)
    elif what.startswith("GloVe"):
        try:
            it = glove_item(path)
            plan.add(it.archive, it.download_path, it, need)
        except NotFetchable as e:
            if not path.exists():
                plan.cannot(str(path), str(e))
    elif what.startswith("instance cache"):
        return  # made from the fetched data (`gmbench extract`, or the runner inside the job)
    elif not path.exists():
        plan.cannot(str(path), _OWN)


def plan_runs(runs) -> Plan:
    """Everything the planned runs read that an official download provides."""
    from ..runner import _side_files
    plan = Plan()
    for r in runs:
        d, need = r.cfg.data, f"row {r.row.label!r}"
        if not d.name.startswith("synthetic"):
            _add_dataset(plan, d.name, d.root, [d.train_split, d.test_split], need)
        for what, p in _side_files(r.cfg, Path(d.root) if d.root else None):
            _add_file(plan, what, p, need)
    return plan


def plan_names(names: List[str], root: Optional[str]) -> Plan:
    from ..config import ConfigError, load_yaml, named_yaml
    from ..data import data_config
    from ..data.sources import GLOVE_FILES
    from ..registry import UnknownNameError, list_datasets
    from ..models import hub_files
    plan = Plan()
    for n in names:
        enum = hub_files.enum_by_name(n)
        if enum is not None:
            plan.add(hub_files.weights_archive(enum), hub_files.weights_target(enum), None, n)
        elif Path(n).name.startswith("glove."):  # a bare name goes where the configs look
            _add_file(plan, "GloVe word vectors", GLOVE_DIR / n if "/" not in n else Path(n), n)
        else:
            try:
                cfg = data_config(n)
            except UnknownNameError:
                raise ConfigError(
                    f"fetch: {n!r} is no dataset ({', '.join(list_datasets())}), GloVe file "
                    f"({', '.join(GLOVE_FILES)}) or weights enum "
                    f"({', '.join(hub_files.enum_name(e) for e in hub_files.known_enums())})") from None
            if root is None:  # the root of configs/datasets/NAME.yaml, as `run` uses
                root = (load_yaml(named_yaml("datasets", n)).get("data") or {}).get("root")
            _add_dataset(plan, n, root, [cfg.train_split, cfg.test_split], n)
    return plan


def describe(plan: Plan) -> str:
    """Each file: state, size, source URL, checksum and its citation; then the total."""
    from ..utils.download import human_size
    lines, total = [], 0
    for t in plan.tasks.values():
        a, done = t.archive, t.present()
        size = human_size(a.size) if a.size_exact else f"~{human_size(a.size)}"
        lines.append(f"  [{'present' if done else 'fetch'}] {a.name}  {size}  {a.url}")
        lines.append(f"      checksum {a.checksum or 'none published (size + data check)'}  "
                     f"({a.source})")
        where = (f"unpack into {t.item.folder}" if t.item is not None and t.item.pick is None
                 else f"→ {', '.join(map(str, t.item.pick.values()))}" if t.item is not None
                 else f"→ {t.dest}")
        lines.append(f"      {a.what}; {where}; for {', '.join(t.needs)}")
        total += 0 if done else a.size
    for what, why in plan.unfetchable:
        lines.append(f"  [cannot fetch] {what}: {why}")
    todo = plan.todo()
    lines.append(f"total download: {human_size(total)} in {len(todo)} file(s)"
                 + (f" ({len(plan.tasks) - len(todo)} present)" if len(todo) < len(plan.tasks) else ""))
    lines += plan.notes
    return "\n".join(lines)


def _check_disk(todo: List[Task]) -> None:
    """Before any byte is downloaded: room for every remaining download, per file system."""
    from ..utils.download import PART, existing_ancestor, check_free
    by_dev: Dict[int, Tuple[Path, int]] = {}
    for t in todo:
        part = t.dest.with_name(t.dest.name + PART)
        left = max(0, t.archive.size - (part.stat().st_size if part.exists() else 0))
        anc = existing_ancestor(t.dest.parent)
        dev = anc.stat().st_dev
        by_dev[dev] = (anc, by_dev.get(dev, (anc, 0))[1] + left)
    for anc, need in by_dev.values():
        check_free(anc, need, f"the {len(todo)} download(s)")


def execute(plan: Plan, args, log=print) -> List[Tuple[str, Path]]:
    """Fetch, verify and unpack every missing file; returns the (dataset, root) unpacked."""
    from ..utils.download import Checksum, fetch_file, mirror_urls, unpack
    from ..utils.io import atomic_write_text
    todo = plan.todo()
    _check_disk(todo)
    unpacked: List[Tuple[str, Path]] = []
    for t in todo:
        a = t.archive
        log(f"fetching {a.name} ({a.what})")
        fetch_file(t.dest, mirror_urls(a.url, args.mirror) + list(a.mirrors),
                   a.size if a.size_exact else None,
                   Checksum.parse(a.checksum) if a.checksum else None,
                   from_dirs=[Path(d) for d in args.from_dirs], retries=args.retries,
                   progress=not args.no_progress and sys.stderr.isatty(), log=log)
        if t.item is None:
            log(f"  verified → {t.dest}")
            continue
        written = unpack(t.dest, t.item.folder, t.item.pick,
                         last=() if t.item.pick else a.provides)
        if t.item.pick is None:
            atomic_write_text(t.item.marker, json.dumps(
                {"archive": a.name, "url": a.url, "checksum": a.checksum, "files": len(written)}))
            unpacked.append((t.item.dataset, t.item.folder))
        if not args.keep_archives:
            t.dest.unlink()
        log(f"  verified and unpacked {len(written)} file(s) → "
            f"{t.item.folder if t.item.pick is None else written[0]}")
    return list(dict.fromkeys(unpacked))


def _check_data(unpacked, args) -> int:
    from ..data.check import check_dataset, default_workers, format_report
    worst = 0
    for name, root in unpacked:
        print(f"python -m gmbench data check {name} --root {root}")
        reports = check_dataset(name, root, decode=not args.no_decode, workers=default_workers(),
                                progress=not args.no_progress and sys.stderr.isatty())
        print(format_report(reports))
        worst = max(worst, 1 if any(r.problems for r in reports) else 0)
    return worst


def cmd_fetch(args) -> int:
    from ..config import ConfigError
    if bool(args.suite) == bool(args.names):
        raise ConfigError("give either --suite NAME or dataset names (e.g. `fetch voc2007`)")
    if args.suite:
        overrides = list(args.overrides) + ([f"data.root={args.root}"] if args.root else [])
        plan = plan_runs(_plan_suite(args.suite, overrides))
        title = f"suite {args.suite}"
    else:
        plan = plan_names(args.names, args.root)
        title = ", ".join(args.names)
    print(f"fetch plan for {title}:")
    print(describe(plan))
    if args.dry_run:
        return 0
    unpacked = execute(plan, args)
    code = _check_data(unpacked, args)
    missing = [w for w, _ in plan.unfetchable]
    if missing:
        print(f"not fetched (see above): {', '.join(missing)}", file=sys.stderr)
        code = max(code, 1)
    elif code == 0:
        print("fetch: everything is on disk and verified" +
              (f"; now: python -m gmbench run --suite {args.suite}" if args.suite else ""))
    return code


def _plan_suite(suite_arg: str, overrides: List[str]):
    from .. import runner
    from ..selection import split_overrides
    suite = runner.load_suite(suite_arg)
    common, per_row = split_overrides(overrides, suite)
    return runner.plan(suite, common, row_overrides=per_row)


def offline_gate(args, runs) -> int:
    """``run``'s check with ``--offline`` or GMBENCH_OFFLINE=1: 0 when every file the runs
    read is on disk, else 1 after naming each missing file and the ``fetch`` command."""
    from ..utils.download import OFFLINE_ENV, offline
    if getattr(args, "offline", False):
        os.environ[OFFLINE_ENV] = "1"  # also for torch hub loads and child processes
    if not offline():
        return 0
    plan = plan_runs(runs)
    missing = [f"{t.dest if t.item is None else ', '.join(map(str, t.item.provides())) or t.item.folder}"
               f" ({t.archive.what})" for t in plan.todo()]
    missing += [f"{what} ({why})" for what, why in plan.unfetchable]
    if not missing:
        if getattr(args, "dry_run", False):
            print(f"offline ({OFFLINE_ENV}=1): every file the runs read is on disk")
        return 0
    cmd = ["python", "-m", "gmbench", "fetch", "--suite", args.suite]
    for o in getattr(args, "overrides", []):
        cmd += ["--set", o]
    print(f"error: offline ({OFFLINE_ENV}=1 or --offline): {len(missing)} file(s) the runs need "
          f"are missing and nothing is downloaded here:\n  " + "\n  ".join(missing) +
          f"\nOn a machine with internet, with the same data folders and torch hub cache "
          f"(TORCH_HOME), run:\n  {shlex.join(cmd)}", file=sys.stderr)
    return 1
