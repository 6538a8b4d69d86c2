"""``python -m gmbench``: run suites, list what exists, render tables, data tools, env.

Each sub-command lives in its own module exposing ``add_parser(subparsers)``
which sets ``func(args) -> exit code``.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import compare, core, data, detector, env, extract, fetch, status  # noqa: F401  (sub-command modules)

COMMANDS = (core, status, compare, data, extract, detector, env, fetch)  # help order
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gmbench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMANDS:
        mod.add_parser(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from ..errors import ConfigError  # not ..config: importing it loads every registry
    from ..registry import UnknownNameError
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UnknownNameError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as e:  # noqa: BLE001  (known runtime failures: one line, exit 1)
        code = core.runtime_error_code(e)
        if code is None:
            raise
        print(f"error: {e}", file=sys.stderr)
        return code
