"""CSV: the wide summary (``table.csv``, one line per table row, as printed) and the tidy long
file (``table_tidy.csv``, one line per run × metric × epoch selection).

The tidy file has the same columns for every suite::

    suite,row,method,dataset,seed,metric,value,selection

``row`` is the table row, ``metric`` a gmbench metric key (``mAP``, ``CF1@3``,
``AP:<class>``, ``chance mAP``, ``epoch_s``), ``value`` unrounded, in percent (seconds for
``epoch_s``), ``selection`` ``final`` or ``best`` (the best test epoch, where the record has
one). pandas: ``pd.read_csv("table_tidy.csv").pivot_table(index="row", columns="metric",
values="value", aggfunc=["mean", "std"])``.
"""
from __future__ import annotations

import csv
import io
from typing import Iterator, List

from .fmt import fmt, fmt_std, is_nan
from .model import Table, record_value, selected_metrics

TIDY_COLUMNS = ["suite", "row", "method", "dataset", "seed", "metric", "value", "selection"]


def _csv_delta(d) -> str:
    return "" if d is None else ("0.0" if d == 0 else f"{d:+.1f}")


SIG_FIELDS = ("delta to best", "delta CI low", "delta CI high", "p", "p Holm", "below best")


def _sig_cells(cell) -> list:
    """The significance columns of one row (tables.paired), in points; '' if untested."""
    if not cell:
        return [""] * len(SIG_FIELDS)
    lo, hi = cell["ci"]
    p = cell["p"]
    return [_number(100 * cell["delta"]), _number(100 * lo), _number(100 * hi),
            "" if is_nan(p) else _number(p),
            "" if cell["is_ref"] or is_nan(cell["p_holm"]) else _number(cell["p_holm"]),
            "ref" if cell["is_ref"] else ("yes" if cell["below"] else "no")]


def to_csv(t: Table) -> str:
    """One row per table row. With a reference: source, citation, and a delta per column.
    Where significance was computed: per headline column, the difference to the best row
    with its 95% CI, the p-value, its Holm correction and whether the row is below the best."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    ref = t.published is not None
    sig = t.signif
    sig_cols = list(dict.fromkeys(c for _, c in sig.cells)) if sig is not None else []
    head = (["row"] + (["source", "cite", "reference"] if ref else [])
            + ["method", "dataset", "n_seeds", "selection"])
    w.writerow(head + [x for c in t.cols
                       for x in ((c, f"{c} std", f"{c} delta") if ref else (c, f"{c} std"))]
               + [f"{c} {f}" for c in sig_cols for f in SIG_FIELDS])
    for r in t.rows:
        pub = r["source"] == "published"
        vals = []
        for c in t.cols:
            m, s = r["values"][c]
            vals += ["" if is_nan(m) else fmt(m, c), fmt_std(s, c)]
            if ref:
                vals.append(_csv_delta(r["delta"].get(c)))
        lead = [r["name"] if pub else r["row"]]
        if ref:
            lead += [(r.get("pub_source") or t.published.short_source) if pub else "gmbench",
                     r.get("cite", ""),
                     r["reference"] or ""]
        for c in sig_cols:
            vals += _sig_cells(sig.cells.get((r["row"], c)))
        w.writerow(lead + [r["method"], r["dataset"], "" if pub else len(r["seeds"]),
                           "" if pub else t.select] + vals)
    return buf.getvalue()


def _number(x: float) -> str:
    return format(round(float(x), 10), ".12g")


def _tidy_rows(records: List[dict]) -> Iterator[list]:
    for rec in records:
        row = rec.get("table_row") or rec["row"]
        lead = [rec.get("suite", ""), row, rec.get("method", ""), rec.get("dataset", ""),
                rec.get("seed", "")]
        selections = [("final", rec.get("metrics") or {})]
        if isinstance(rec.get("best_metrics"), dict):
            selections.append(("best", rec["best_metrics"]))
        if any("metrics_raw" in h for h in (rec.get("train") or {}).get("history") or []):
            selections.append(("best_of_ema", selected_metrics(rec, "best_of_ema")))
        for sel, metrics in selections:
            for key, v in metrics.items():
                # counts such as n_classes_ap are ints; metrics are floats
                if isinstance(v, float) and not is_nan(v):
                    yield lead + [key, _number(100 * v), sel]
            if sel == "final":
                for cls, v in (rec.get("per_class_ap") or {}).items():
                    if not is_nan(v):
                        yield lead + [f"AP:{cls}", _number(100 * v), sel]
                for key, scale in (("chance mAP", 100), ("epoch_s", 1)):
                    v = record_value(rec, key)
                    if not is_nan(v):
                        yield lead + [key, _number(scale * v), sel]


def to_tidy_csv(records: List[dict]) -> str:
    """The long file (module docstring); records in file order."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TIDY_COLUMNS)
    w.writerows(_tidy_rows(records))
    return buf.getvalue()
