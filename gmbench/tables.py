"""Result tables from runs.jsonl alone: CSV (tidy), Markdown and LaTeX (booktabs).

Values are percentages with one decimal (as the paper prints them), mean ± std
over seeds. Columns come from the suite's ``table.columns``: metric keys
(``mAP``, ``CF1``, ``OF1@3`` ...) or ``AP:<class>`` / ``AP:*`` for per-class AP.
"""
from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from tabulate import tabulate

from .utils.io import atomic_write_text, read_jsonl


def _fmt(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _columns(spec: dict, records: List[dict]) -> List[str]:
    cols = []
    for c in spec.get("columns", []):
        if c == "AP:*":
            cols += [f"AP:{n}" for n in records[0]["per_class_ap"]]
        else:
            cols.append(c)
    if spec.get("chance"):
        cols.append("chance mAP")
    return cols


def _value(rec: dict, col: str):
    if col == "chance mAP":
        return rec.get("chance_mAP")
    if col.startswith("AP:"):
        return rec["per_class_ap"].get(col[3:])
    return rec["metrics"].get(col)


def aggregate(records: List[dict]) -> Tuple[List[str], List[dict]]:
    """Group records by row (in suite order): per column mean and std over seeds."""
    if not records:
        raise ValueError("no finished runs to tabulate")
    latest = records[-1]
    order = list(latest.get("row_order") or [])
    for r in records:
        if r["row"] not in order:
            order.append(r["row"])
    cols = _columns(latest.get("table", {}), records)
    rows = []
    for label in order:
        recs = sorted((r for r in records if r["row"] == label), key=lambda r: r["seed"])
        if not recs:
            continue
        row = {"row": label, "method": recs[0]["method"], "dataset": recs[0]["dataset"],
               "seeds": [r["seed"] for r in recs], "values": {}}
        for c in cols:
            vals = [v for v in (_value(r, c) for r in recs) if v is not None and not math.isnan(v)]
            mean = float(np.mean(vals)) if vals else float("nan")
            std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
            row["values"][c] = (mean, std)
        rows.append(row)
    return cols, rows


def _cell(mean: float, std) -> str:
    return _fmt(mean) if std is None else f"{_fmt(mean)} ± {_fmt(std)}"


def to_csv(cols: Sequence[str], rows: List[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "method", "dataset", "n_seeds"] + [x for c in cols for x in (c, f"{c} std")])
    for r in rows:
        vals = []
        for c in cols:
            m, s = r["values"][c]
            vals += [_fmt(m), "" if s is None else _fmt(s)]
        w.writerow([r["row"], r["method"], r["dataset"], len(r["seeds"])] + vals)
    return buf.getvalue()


def to_markdown(cols: Sequence[str], rows: List[dict]) -> str:
    body = [[r["row"]] + [_cell(*r["values"][c]) for c in cols] for r in rows]
    return tabulate(body, headers=["Method"] + list(cols), tablefmt="github",
                    disable_numparse=True) + "\n"


def _rank_marks(cols, rows) -> Dict[Tuple[int, str], str]:
    """Best value of each column in bold, second underlined (higher is better)."""
    marks = {}
    for c in cols:
        if c == "chance mAP":
            continue
        means = sorted({round(r["values"][c][0], 3) for r in rows if not math.isnan(r["values"][c][0])},
                       reverse=True)
        for i, r in enumerate(rows):
            m = r["values"][c][0]
            if means and not math.isnan(m):
                if round(m, 3) == means[0]:
                    marks[(i, c)] = "best"
                elif len(means) > 1 and round(m, 3) == means[1]:
                    marks[(i, c)] = "second"
    return marks


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(s: str) -> str:
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _TEX[m.group()], s)


def to_latex(cols: Sequence[str], rows: List[dict], caption: str = "") -> str:
    marks = _rank_marks(cols, rows)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines += [r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule",
              " & ".join(["Method"] + [latex_escape(c) for c in cols]) + r" \\", r"\midrule"]
    for i, r in enumerate(rows):
        cells = [latex_escape(r["row"])]
        for c in cols:
            m, s = r["values"][c]
            text = _fmt(m) if s is None else rf"{_fmt(m)}$\pm${_fmt(s)}"
            if marks.get((i, c)) == "best":
                text = rf"\textbf{{{text}}}"
            elif marks.get((i, c)) == "second":
                text = rf"\underline{{{text}}}"
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_tables(suite_dir: Path, formats: Sequence[str] = ("csv", "md")) -> List[Path]:
    """Render ``suite_dir/runs.jsonl`` into table.{csv,md,tex}; returns the paths written."""
    suite_dir = Path(suite_dir)
    records = [r for r in read_jsonl(suite_dir / "runs.jsonl") if r.get("status") == "finished"]
    if not records:
        raise FileNotFoundError(f"{suite_dir / 'runs.jsonl'} has no finished runs; run the suite first")
    cols, rows = aggregate(records)
    render = {"csv": lambda: to_csv(cols, rows), "md": lambda: to_markdown(cols, rows),
              "tex": lambda: to_latex(cols, rows, caption=f"gmbench suite {records[-1]['suite']}")}
    written = []
    for fmt in formats:
        if fmt not in render:
            raise ValueError(f"unknown table format {fmt!r}; choose from csv, md, tex")
        written.append(atomic_write_text(suite_dir / f"table.{fmt}", render[fmt]()))
    return written
