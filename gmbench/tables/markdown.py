"""Markdown (GitHub) table: what ``python -m gmbench run`` prints.

Caption on top, one line per row with mean ± std and (Δ) to the published value, best in
bold and second best in italics, then the notes (protocol, skipped images, differing settings,
significance); rows significantly below the best carry ``MARK`` (:mod:`.paired`).
"""
from __future__ import annotations

from typing import List

from tabulate import tabulate

from .fmt import ci_text, fmt, fmt_std, signed, split_col
from .marks import rank_marks
from .model import Table, dataset_name
from .notes import DAGGER, caption, notes
from .paired import MARK, headline


def _header(t: Table) -> List[str]:
    group_of = t.group_of()
    return [f"{group_of[c]} {t.header(c)}" if c in group_of else t.header(c) for c in t.cols]


def _source(r: dict) -> str:
    return "published" if r["source"] == "published" else f"reproduced, {len(r['seeds'])} seeds"


def _name(r: dict) -> str:
    return r["row"] + (f" {DAGGER}" if r["protocol"]["test_annotations"] else "")


def ci_header(t: Table, c: str) -> str:
    """'Δ mAP', or with the column's group / dataset where the table spans several."""
    ds = split_col(c)[0]
    group = t.group_of().get(c) or (dataset_name(ds) if ds else "")
    return f"Δ {group + ' ' if group else ''}{t.header(c)}"


def ci_columns(t: Table, ci: bool) -> list:
    """The headline columns that get a 'Δ to best [95% CI]' column (``ci`` and tested)."""
    sig = t.signif
    return [c for c in headline(t) if any(k[1] == c for k in sig.cells)] if ci and sig else []


def to_markdown(t: Table, marks: str = "separate", std: str = "suffix",
                delta: str = "suffix", ci: bool = False) -> str:
    """``std``/``delta``: 'suffix' (in the cell) or 'off' (Markdown has no sub-rows; 'row'
    and 'auto' print as 'suffix'). ``ci``: a column per headline column with each row's
    difference to the best row and its 95% bootstrap CI."""
    ranked = rank_marks(t.cols, t.rows, marks)
    ref = t.published is not None
    cis = ci_columns(t, ci)
    body = []
    for i, r in enumerate(t.rows):
        cells = []
        for c in t.cols:
            m, s = r["values"][c]
            text = fmt(m, c) if s is None or std == "off" else f"{fmt(m, c)} ± {fmt_std(s, c)}"
            text = {"best": f"**{text}**", "second": f"_{text}_"}.get(ranked.get((i, c)), text)
            if t.signif is not None and t.signif.below(r["row"], c):
                text += f" {MARK}"
            d = r["delta"].get(c)
            cells.append(text if d is None or delta == "off" else f"{text} ({signed(d)})")
        cells += [ci_text(t.signif.cells.get((r["row"], c))) if r["source"] == "reproduced"
                  else "" for c in cis]
        body.append([_name(r)] + ([_source(r)] if ref else []) + cells)
    head = (["Method"] + (["Source"] if ref else []) + _header(t)
            + [f"{ci_header(t, c)} to best [95% CI]" for c in cis])
    out = caption(t, marks, "off" if std == "off" else "suffix",
                  "off" if delta == "off" else "suffix", second="in italics") + "\n\n"
    out += tabulate(body, headers=head, tablefmt="github", disable_numparse=True) + "\n"
    extra = notes(t)
    if extra:
        out += "\nNotes:\n" + "".join(f"- {n}\n" for n in extra)
    return out
