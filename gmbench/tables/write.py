"""Render a suite directory's runs.jsonl into its table files (and figure)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..utils.io import atomic_write_text, read_jsonl
from .csvout import to_csv, to_tidy_csv
from .latex import to_latex
from .markdown import to_markdown
from .model import build_table

FORMATS = ("csv", "md", "tex")


def planned_seeds(suite_dir: Path) -> Optional[Dict[str, List[int]]]:
    """Row label → planned seeds, from the plan.json the runner writes (None without one)."""
    try:
        runs = json.loads((Path(suite_dir) / "plan.json").read_text(encoding="utf-8"))["runs"]
        out: Dict[str, List[int]] = {}
        for r in runs:
            out.setdefault(r["row"], []).append(int(r["seed"]))
        return {k: sorted(set(v)) for k, v in out.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_tables(suite_dir: Path, formats: Sequence[str] = ("csv", "md"),
                 select: Optional[str] = None, std: str = "auto", delta: str = "auto",
                 marks: str = "separate") -> List[Path]:
    """Render ``suite_dir/runs.jsonl`` into table.{csv,md,tex} (csv also writes
    table_tidy.csv) and the suite's figure, if it has ``table.figure``; returns the paths
    written. ``select``: final | best (default: the suite's ``table.select``, else final);
    ``std``/``delta``: auto | suffix | row | off; ``marks``: separate | joint | off."""
    suite_dir = Path(suite_dir)
    records = [r for r in read_jsonl(suite_dir / "runs.jsonl") if r.get("status") == "finished"]
    if not records:
        raise FileNotFoundError(f"{suite_dir / 'runs.jsonl'} has no finished runs; run the suite first")
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")
    t = build_table(records, select, planned_seeds(suite_dir))
    md_std = "off" if std == "off" else "suffix"
    md_delta = "off" if delta == "off" else "suffix"
    render = {"csv": lambda: to_csv(t),
              "md": lambda: to_markdown(t, marks, md_std, md_delta),
              "tex": lambda: to_latex(t, marks, std, delta)}
    texts = {fmt: render[fmt]() for fmt in formats}   # all or nothing: render, then write
    tidy = to_tidy_csv(records) if "csv" in formats else None
    written = [atomic_write_text(suite_dir / f"table.{fmt}", text) for fmt, text in texts.items()]
    if tidy is not None:
        written.append(atomic_write_text(suite_dir / "table_tidy.csv", tidy))
    fig = (records[-1].get("table") or {}).get("figure")
    if fig:
        from .figures import FigureSpec, plot_sweep
        spec = FigureSpec.model_validate(fig)
        written += plot_sweep(records, spec, suite_dir / spec.file, select=t.select)
    return written
