"""Captions and notes, as plain Unicode sentences that every format renders.

The caption is the paper's (without its "Table N:" prefix) plus what a reader needs to judge
the reproduced rows: seeds, which epoch, what the parentheses hold, how marks are ranked.
Notes below a table: rows that used test-split annotations at test time (marked †), a
detector whose training set overlaps the test split, images skipped as unreadable, and which
differences between reproduced rows exceed their spread.

Spread rule (the demo's "which differences are real"): with at least 3 seeds per row, two
rows on the same dataset differ beyond their spread when |mean_a − mean_b| > std_a + std_b,
i.e. their mean ± std intervals do not overlap. It is a deliberately simple, conservative
screen, not a significance test (3 seeds give a t-test 2–4 degrees of freedom); it is
computed on the unrounded means and stds of the headline column (mAP where the table has it).
"""
from __future__ import annotations

from itertools import combinations
from typing import List

from .fmt import UNRANKED, split_col
from .marks import describe
from .model import Table, dataset_name

DAGGER = "†"
MIN_SEEDS_FOR_SPREAD = 3


def _and(items: List[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def seeds_phrase(t: Table) -> str:
    counts = sorted({len(r["seeds"]) for r in t.reproduced})
    if counts == [1]:
        return "one seed (no std)"
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"mean ± std over {n} seeds"


def selection_phrase(t: Table) -> str:
    if t.select == "best":
        return ("at each run's best epoch, selected on the test split (an optimistic choice "
                "that the paper's protocol does not separate from testing)")
    return "at the final training epoch"


def caption(t: Table, marks: str = "separate", std: str = "suffix", delta: str = "suffix",
            second: str = "underlined") -> str:
    """The caption (plain text). ``std``/``delta``: 'suffix', 'row' or 'off'."""
    several = len(t.datasets) > 1
    how = seeds_phrase(t)
    if std == "row" and how.startswith("mean ±"):
        how = how.replace("mean ± std", "mean (±std on the line below it)")
    elif std == "off" and how.startswith("mean ±"):
        how = how.replace("mean ± std", "mean")
    how += " " + selection_phrase(t)
    if t.published is not None:
        parts = [t.published.caption, f"Top: as published ({t.published.short_source}).",
                 f"Bottom: reproduced with gmbench, {how}"]
        if delta != "off" and any(r["delta"] for r in t.reproduced):
            where = " on a line of its own" if delta == "row" else ""
            parts[-1] += (f"; in parentheses{where}, the difference to the published value "
                          f"in points")
        parts[-1] += "."
    else:
        parts = [f"Results on {_and([dataset_name(d) for d in t.datasets])}, {how}."]
    parts.append(describe(marks, several, t.published is not None, second))
    if any(r["protocol"]["test_annotations"] for r in t.rows):
        parts.append(f"{DAGGER}: uses test-split annotations at test time (see notes).")
    return " ".join(p for p in parts if p)


def _headline(t: Table) -> List[str]:
    ranked = [c for c in t.cols if split_col(c)[1] not in UNRANKED]
    maps = [c for c in ranked if split_col(c)[1] == "mAP"]
    return maps or ranked[:1]


def spread_note(t: Table, brief: bool = False) -> str:
    """Which differences between reproduced rows exceed their spread (see module doc);
    ``brief``: nothing when there are too few seeds to say."""
    rows = t.reproduced
    if not rows or len(rows) < 2:
        return ""
    if min(len(r["seeds"]) for r in rows) < MIN_SEEDS_FOR_SPREAD:
        return "" if brief else (f"Fewer than {MIN_SEEDS_FOR_SPREAD} seeds per row: no difference between rows "
                f"is called larger than its spread.")
    found, within, metric = [], 0, ""
    for c in _headline(t):
        ds, key = split_col(c)
        metric = key
        rows_c = [r for r in rows if r["samples"].get(c, 0) >= MIN_SEEDS_FOR_SPREAD]
        pools = dict.fromkeys(ds or r["dataset"] for r in rows_c)
        for pool in pools:
            members = [r for r in rows_c if (ds or r["dataset"]) == pool]
            members.sort(key=lambda r: -r["values"][c][0])
            for a, b in combinations(members, 2):
                (ma, sa), (mb, sb) = a["values"][c], b["values"][c]
                gap, spread = 100 * abs(ma - mb), 100 * (sa + sb)
                if gap > spread:
                    where = f" ({dataset_name(ds)})" if ds and len(t.datasets) > 1 else ""
                    found.append(f"{a['row']} > {b['row']}{where}: {gap:.2f} > {spread:.2f}")
                else:
                    within += 1
    if not found and not within:
        return ""
    head = (f"Differences in {metric} larger than the two rows' std summed "
            f"(|Δ mean| > std_a + std_b)")
    if not found:
        return head + ": none; every pair of rows is within its spread."
    tail = {0: " No pair is within its spread.", 1: " The other pair is within its spread."
            }.get(within, f" The other {within} pairs are within their spread.")
    return head + ": " + "; ".join(found) + "." + tail


def _runs(counts: List[int], split: str) -> str:
    lo, hi = min(counts), max(counts)
    n = str(lo) if lo == hi else f"{lo}–{hi}"
    return f"{n} {split} image{'s' if hi != 1 else ''}"


def notes(t: Table, brief: bool = False) -> List[str]:
    """The notes printed under the table (plain text), in a fixed order; ``brief`` leaves
    out the sentence that there are too few seeds to compare rows."""
    out = []
    leaked = [r["row"] for r in t.rows if r["protocol"]["test_annotations"]]
    if leaked:
        out.append(f"{DAGGER} {_and(leaked)}: inputs at test time are derived from the test "
                   f"split's annotations (e.g. annotation boxes as instances), so "
                   f"{'this row is' if len(leaked) == 1 else 'these rows are'} not comparable "
                   f"with methods that see only the images.")
    for r in t.rows:
        if r["protocol"]["overlap"]:
            out.append(f"{r['row']}: the detector {_and(r['protocol']['overlap'])} was trained "
                       f"on data that overlaps the test split.")
    for r in t.rows:
        if r["skipped"]:
            parts = [_runs(v, s) for s, v in r["skipped"].items()]
            runs, hit = len(r["seeds"]), max(len(v) for v in r["skipped"].values())
            where = "" if runs == 1 else (" in each run" if hit == runs else
                                          f" in {hit} of {runs} runs")
            out.append(f"{r['row']}: {_and(parts)} skipped as unreadable{where}.")
    for r in t.rows:
        if r.get("missing"):
            out.append(f"{r['row']}: mean over the finished seeds only; not finished: "
                       f"{_and(r['missing'])}.")
    if t.unstarted:
        out.append(f"Planned but with no finished run yet: {_and(t.unstarted)}.")
    sourced = [r for r in t.rows if r.get("pub_source")]
    if sourced:  # a table compiled from several papers cites each published row
        out.append("Published rows: " + "; ".join(f"{r['name']}: {r['pub_source']}"
                                                  for r in sourced) + ".")
    spread = spread_note(t, brief)
    if spread:
        out.append(spread)
    return out
