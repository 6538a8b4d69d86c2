"""This run's table next to a committed snapshot of the same suite, with differences.

Snapshots are earlier versions' results kept in ``results/snapshots/<suite>-<date>/runs.jsonl``
(the newest by name is used). ``gmbench run`` prints the comparison after its table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .tables import aggregate
from .tables.fmt import delta, fmt, is_nan, signed
from .tables.settings import differing, row_configs
from .utils.io import read_jsonl

SNAPSHOTS = Path(__file__).resolve().parents[1] / "results" / "snapshots"


def find_snapshot(suite: str, root: Path = SNAPSHOTS) -> Optional[Path]:
    """The newest ``root/<suite>-*/runs.jsonl`` (or ``root/<suite>/runs.jsonl``), or None."""
    if not root.is_dir():
        return None
    hits = sorted(p for p in root.iterdir()
                  if (p.name == suite or p.name.startswith(suite + "-")) and (p / "runs.jsonl").is_file())
    return hits[-1] / "runs.jsonl" if hits else None


def compare_records(now: List[dict], then: List[dict], name: str,
                    cols: Sequence[str] = ("mAP", "CF1", "OF1")) -> str:
    """Markdown: per table row, each column now | snapshot | Δ (percentage points). A row
    whose result settings (:mod:`gmbench.tables.settings`) differ from the snapshot's gets
    no Δ, and a line below the table names the settings that differ (keys only one side has,
    settings added by a later gmbench version, are not compared)."""
    _, rows_now = aggregate(now)
    _, rows_then = aggregate(then)
    old: Dict[str, dict] = {r["row"]: r for r in rows_then}
    cfg_now, cfg_then = row_configs(now), row_configs(then)
    head = ["row"] + [f"{c} {w}" for c in cols for w in ("now", name, "Δ")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    unequal: Dict[str, List[str]] = {}   # what differs → rows
    for r in rows_now:
        cells = [r["row"]]
        diff = differing({"now": cfg_now.get(r["row"], {}), name: cfg_then.get(r["row"], {})},
                         missing_differs=False) \
            if r["row"] in old else {}
        if diff:
            unequal.setdefault("; ".join(f"{k} {v['now']} now, {v[name]} in {name}"
                                         for k, v in list(diff.items())[:6])
                               + (f"; and {len(diff) - 6} more" if len(diff) > 6 else ""),
                               []).append(r["row"])
        for c in cols:
            a = r["values"].get(c, (float("nan"), None))[0]
            b = old[r["row"]]["values"].get(c, (float("nan"), None))[0] if r["row"] in old else float("nan")
            # Δ of the values as printed, as the tables' deltas to published rows
            d = "–" if is_nan(a) or is_nan(b) or diff else signed(delta(a, b, c))
            cells += [fmt(a, c), fmt(b, c), d]
        lines.append("| " + " | ".join(cells) + " |")
    gone = [r for r in old if r not in {x["row"] for x in rows_now}]
    if gone:
        lines.append(f"(only in {name}: {', '.join(gone)})")
    for what, rows in unequal.items():
        who = "every row" if len(rows) == len(rows_now) else ", ".join(rows)
        lines.append(f"(not compared, settings differ from {name}'s for {who}: {what})")
    return "\n".join(lines)


def against_snapshot(suite: str, suite_dir: Path, root: Path = SNAPSHOTS) -> str:
    """The comparison text for ``gmbench run``, or "" when there is no snapshot."""
    snap = find_snapshot(suite, root)
    now = Path(suite_dir) / "runs.jsonl"
    if snap is None or not now.is_file() or snap.resolve() == now.resolve():
        return ""
    return (f"compared with the snapshot {snap.parent} (Δ in points):\n"
            + compare_records(read_jsonl(now), read_jsonl(snap), "snapshot"))
