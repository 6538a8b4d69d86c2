"""Best / second-best marks (the paper's red / blue; bold / underline here).

Modes: ``separate`` (default) ranks the published rows among themselves, which gives back the
paper's own marks, and the reproduced rows among themselves; ``joint`` ranks all rows
together; ``off`` marks nothing. Values compare as printed (one decimal), so equal printed
values share a mark, and only rows on the same dataset compete (a sweep over datasets has a
best per dataset).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from .fmt import UNRANKED, shown, split_col

MARK_MODES = ("separate", "joint", "off")


def rank_marks(cols: List[str], rows: List[dict], mode: str = "separate"
               ) -> Dict[Tuple[int, str], str]:
    """(row index, column) → 'best' | 'second'."""
    if mode not in MARK_MODES:
        raise ValueError(f"marks {mode!r}: choose from {', '.join(MARK_MODES)}")
    marks: Dict[Tuple[int, str], str] = {}
    if mode == "off":
        return marks
    for c in cols:
        ds, key = split_col(c)
        if key in UNRANKED:
            continue
        vals = [shown(r["values"][c][0], c) for r in rows]

        def pool(r):
            return (ds or r["dataset"], r["source"] if mode == "separate" else "")
        for group in dict.fromkeys(pool(r) for r in rows):
            idx = [i for i, r in enumerate(rows) if pool(r) == group and vals[i] is not None]
            ranked = sorted({vals[i] for i in idx}, reverse=True)
            for i in idx:
                if vals[i] == ranked[0]:
                    marks[(i, c)] = "best"
                elif len(ranked) > 1 and vals[i] == ranked[1]:
                    marks[(i, c)] = "second"
    return marks


def describe(mode: str, several_datasets: bool, published: bool,
             second: str = "underlined") -> str:
    """The caption's sentence about the marks."""
    if mode == "off":
        return ""
    where = " per dataset" if several_datasets else ""
    if published and mode == "separate":
        return (f"Best in bold, second best {second}{where}, ranked separately among the "
                f"published and among the reproduced rows.")
    if published:
        return f"Best in bold, second best {second}{where}, ranked over all rows."
    return f"Best in bold, second best {second}{where}."
