"""Render a suite directory's runs.jsonl into its table files (and figure)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..utils.io import atomic_write_text, read_jsonl
from .csvout import to_csv, to_tidy_csv
from .latex import to_latex
from .markdown import to_markdown
from .model import Table, build_table
from .paired import table_significance
from .significance import RESAMPLES

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


def finished(suite_dir: Path, rows: Optional[Sequence[str]] = None) -> List[dict]:
    """The finished records of ``suite_dir/runs.jsonl`` (of the suite rows ``rows`` only)."""
    records = [r for r in read_jsonl(Path(suite_dir) / "runs.jsonl")
               if r.get("status") == "finished" and (rows is None or r.get("row") in rows)]
    if not records:
        raise FileNotFoundError(f"{Path(suite_dir) / 'runs.jsonl'} has no finished runs"
                                + (f" of rows {', '.join(rows)}" if rows is not None else "")
                                + "; run the suite first")
    return records


def table_with_significance(suite_dir: Path, records: List[dict], select: Optional[str] = None,
                            resamples: int = RESAMPLES, seed: int = 0) -> Table:
    """The table of ``records`` with its significance marks from ``suite_dir/preds``."""
    t = build_table(records, select, planned_seeds(suite_dir))
    t.signif = table_significance(t, records, suite_dir, resamples, seed)
    return t


def render_markdown(suite_dir: Path, rows: Optional[Sequence[str]] = None, **kw) -> str:
    """The Markdown table of the suite rows ``rows`` only (``gmbench run --rows``): the
    marks and notes then compare those rows alone."""
    return to_markdown(table_with_significance(suite_dir, finished(suite_dir, rows)), **kw)


def write_tables(suite_dir: Path, formats: Sequence[str] = ("csv", "md"),
                 select: Optional[str] = None, std: str = "auto", delta: str = "auto",
                 marks: str = "separate", ci: bool = False, resamples: int = RESAMPLES,
                 seed: int = 0) -> List[Path]:
    """Render ``suite_dir/runs.jsonl`` (and the runs' ``preds/``) into table.{csv,md,tex}
    (csv also writes table_tidy.csv) and the suite's figure, if it has ``table.figure``;
    returns the paths written. ``select``: final | best (default: the suite's
    ``table.select``, else final); ``std``/``delta``: auto | suffix | row | off; ``marks``:
    separate | joint | off; ``ci``: a Δ-to-best [95% CI] column in Markdown and LaTeX (the
    CSV always has its significance columns); ``resamples``/``seed``: the bootstrap's."""
    suite_dir = Path(suite_dir)
    records = finished(suite_dir)
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")
    t = table_with_significance(suite_dir, records, select, resamples, seed)
    md_std = "off" if std == "off" else "suffix"
    md_delta = "off" if delta == "off" else "suffix"
    render = {"csv": lambda: to_csv(t),
              "md": lambda: to_markdown(t, marks, md_std, md_delta, ci),
              "tex": lambda: to_latex(t, marks, std, delta, ci)}
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
