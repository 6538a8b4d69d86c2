"""Markdown (GitHub) table: what ``python -m gmbench run`` prints.

Caption on top, one line per row with mean ± std and (Δ) to the published value, best in
bold and second best in italics, then the notes (protocol, skipped images, spread).
"""
from __future__ import annotations

from typing import List

from tabulate import tabulate

from .fmt import fmt, fmt_std, signed
from .marks import rank_marks
from .model import Table
from .notes import DAGGER, caption, notes


def _header(t: Table) -> List[str]:
    group_of = t.group_of()
    return [f"{group_of[c]} {t.header(c)}" if c in group_of else t.header(c) for c in t.cols]


def _source(r: dict) -> str:
    return "published" if r["source"] == "published" else f"reproduced, {len(r['seeds'])} seeds"


def _name(r: dict) -> str:
    return r["row"] + (f" {DAGGER}" if r["protocol"]["test_annotations"] else "")


def to_markdown(t: Table, marks: str = "separate", std: str = "suffix",
                delta: str = "suffix") -> str:
    """``std``/``delta``: 'suffix' (in the cell) or 'off' (Markdown has no sub-rows; 'row'
    and 'auto' print as 'suffix')."""
    ranked = rank_marks(t.cols, t.rows, marks)
    ref = t.published is not None
    body = []
    for i, r in enumerate(t.rows):
        cells = []
        for c in t.cols:
            m, s = r["values"][c]
            text = fmt(m, c) if s is None or std == "off" else f"{fmt(m, c)} ± {fmt_std(s, c)}"
            text = {"best": f"**{text}**", "second": f"_{text}_"}.get(ranked.get((i, c)), text)
            d = r["delta"].get(c)
            cells.append(text if d is None or delta == "off" else f"{text} ({signed(d)})")
        body.append([_name(r)] + ([_source(r)] if ref else []) + cells)
    head = ["Method"] + (["Source"] if ref else []) + _header(t)
    out = caption(t, marks, "off" if std == "off" else "suffix",
                  "off" if delta == "off" else "suffix", second="in italics") + "\n\n"
    out += tabulate(body, headers=head, tablefmt="github", disable_numparse=True) + "\n"
    extra = notes(t)
    if extra:
        out += "\nNotes:\n" + "".join(f"- {n}\n" for n in extra)
    return out
