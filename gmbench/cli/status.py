"""``status`` sub-command: where each run of a suite folder stands."""
from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    s = sub.add_parser("status", help="one line per run of OUT/SUITE: finished, running, failed, "
                                      "waiting; exit 0 only when every run is finished")
    s.add_argument("suite_dir", help="e.g. results/demo")
    s.add_argument("--lease", type=float, default=120.0,
                   help="seconds without a heartbeat after which a run's holder counts as gone")
    s.set_defaults(func=cmd_status)


def cmd_status(args) -> int:
    from ..launch.status import status_report
    d = Path(args.suite_dir)
    if not d.is_dir():
        print(f"error: {d} is not a folder; give the suite directory, e.g. results/demo",
              file=sys.stderr)
        return 2
    text, code = status_report(d, args.lease)
    print(text)
    return code
