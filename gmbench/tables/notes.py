"""Captions and notes, as plain Unicode sentences that every format renders.

The caption is the paper's (without its "Table N:" prefix) plus what a reader needs to judge
the reproduced rows: seeds, which epoch, what the parentheses hold, how marks are ranked.
Notes below a table: rows that used test-split annotations at test time (marked †), a
detector whose training set overlaps the test split, images skipped as unreadable, the
result settings (loss, optimizer, schedule, input size, epochs ...) that differ between rows,
and why a row has no significance mark.

Which differences are real is a paired bootstrap over the test images (:mod:`.paired`):
rows significantly below the best row carry a mark, and the caption says how it was tested.
"""
from __future__ import annotations

from typing import List

from .marks import describe
from .model import Table, dataset_name
from .paired import caption_sentence

DAGGER = "†"


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
    if t.select == "best_of_ema":
        return ("at each run's best epoch, taking at every epoch the better of the raw and the "
                "EMA model (the rule of the ASL and ML-Decoder code), both selected on the test "
                "split (an optimistic choice)")
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
    parts.append(caption_sentence(t))
    if any(r["protocol"]["test_annotations"] for r in t.rows):
        parts.append(f"{DAGGER}: uses test-split annotations at test time (see notes).")
    return " ".join(p for p in parts if p)


def _runs(counts: List[int], split: str) -> str:
    lo, hi = min(counts), max(counts)
    n = str(lo) if lo == hi else f"{lo}–{hi}"
    return f"{n} {split} image{'s' if hi != 1 else ''}"


def notes(t: Table) -> List[str]:
    """The notes printed under the table (plain text), in a fixed order."""
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
    pre = sorted({d for r in t.rows for d in r["protocol"].get("pretraining", [])})
    if pre:
        used = [r["row"] for r in t.rows if r["protocol"].get("pretraining")]
        who = "every row" if len(used) == len(t.rows) else _and(used)
        out.append(f"Trunks of {who} start from the synthetic pretraining {_and(pre)} "
                   f"(a ResNet trained on other generated images, the stand-in for ImageNet; "
                   f"record protocol.pretraining), detectors' trunks included.")
    for r in t.rows:
        n = r["protocol"].get("detector_seeds")
        if n is not None and len(r["seeds"]) > 1:
            out.append(f"{r['row']}: " + ("each seed trains its own detector, so the spread "
                                           "includes detector training." if n > 1 else
                                           "one detector serves every seed; the spread leaves "
                                           "its training out."))
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
    out += t.differs
    sig = t.signif
    if sig is not None:
        out += sig.notes
        if sig.cells and not any(c["below"] for c in sig.cells.values()):
            out.append("No row's mAP is significantly below the best row's (paired bootstrap, "
                       "Holm-corrected p < 0.05).")
    return out
