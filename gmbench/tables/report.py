"""``gmbench compare``: every row's difference to a reference row, with 95% CIs and p-values
from the paired bootstrap (:mod:`.significance`), and per-class AP differences.

Rows are table rows (suite rows sharing a ``table_row`` fill one); each dataset is its own
comparison. Text output: one line per row and metric. ``per_class`` writes, per dataset,
``compare_per_class[_<dataset>].csv`` (row, class, AP difference to the reference with its
95% CI, sorted by the difference) and the same as a vector figure (``.svg`` and ``.pdf``).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..utils.io import atomic_write_bytes, atomic_write_text
from .model import TableError, dataset_name
from .paired import compare_pool, missing_notes, pool_runs
from .significance import ALPHA, RESAMPLES, Comparison


def _pt(x: float) -> str:
    """A fraction's difference in points, two decimals, with a true minus sign."""
    if x != x:
        return "–"
    v = round(100 * x, 2) + 0.0
    return "0.00" if v == 0 else (f"+{v:.2f}" if v > 0 else f"−{-v:.2f}")


def comparison_text(res: Comparison, where: str) -> str:
    """Markdown: per row and metric, value, Δ to the reference [95% CI], p and Holm p."""
    head = ["row"] + [x for m in res.metrics
                      for x in (m, f"Δ {m} [95% CI]", "p", "p Holm")]
    lines = [f"Paired bootstrap{where}: {res.resamples:,} resamples of the test images, each "
             f"applied to every row and seed (row value: mean over its seeds); reference: "
             f"{res.ref}. ↓: below it with Holm-corrected p < {ALPHA:g}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in res.rows:
        cells = [row]
        for m in res.metrics:
            v = f"{100 * res.value[row][m]:.2f}"
            if row == res.ref:
                cells += [v, "reference", "", ""]
                continue
            lo, hi = res.ci[row][m]
            mark = " ↓" if res.significant(row, m) else ""
            cells += [v, f"{_pt(res.delta[row][m])} [{_pt(lo)}, {_pt(hi)}]{mark}",
                      f"{res.p[row][m]:.3g}", f"{res.p_holm[row][m]:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class_rows(res: Comparison, classes: Sequence[str]) -> List[list]:
    """[row, reference, class, Δ AP, CI low, CI high] in points, per row sorted by Δ."""
    out = []
    for row in res.rows:
        if row == res.ref:
            continue
        d, ci = res.class_delta[row], res.class_ci[row]
        for k in sorted((k for k in range(len(d)) if d[k] == d[k]), key=lambda k: d[k]):
            out.append([row, res.ref, classes[k], round(100 * d[k], 4),
                        round(100 * ci[k, 0], 4), round(100 * ci[k, 1], 4)])
    return out


def per_class_figure(rows: List[list], ref: str, path: Path) -> List[Path]:
    """Horizontal CI bars of the per-class differences, one panel per row, sorted; SVG+PDF."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = list(dict.fromkeys(r[0] for r in rows))
    n = max(sum(1 for r in rows if r[0] == lab) for lab in labels)
    fig, axes = plt.subplots(1, len(labels), figsize=(3.25 * len(labels), 0.5 + 0.12 * n),
                             squeeze=False, sharey=False)
    for ax, lab in zip(axes[0], labels):
        mine = [r for r in rows if r[0] == lab]
        y = np.arange(len(mine))
        d = np.array([r[3] for r in mine])
        lo, hi = np.array([r[4] for r in mine]), np.array([r[5] for r in mine])
        ax.errorbar(d, y, xerr=[d - lo, hi - d], fmt="o", ms=2, lw=0.8, capsize=0)
        ax.axvline(0, color="0.5", lw=0.6)
        ax.set_yticks(y)
        ax.set_yticklabels([r[2] for r in mine], fontsize=5)
        ax.set_xlabel(f"AP {lab} − {ref} (points, 95% CI)", fontsize=7)
        ax.tick_params(axis="x", labelsize=6)
    fig.tight_layout()
    written = []
    try:
        for fmt, meta in (("svg", {"Creator": None, "Date": None}),
                          ("pdf", {"Creator": None, "Producer": None, "CreationDate": None})):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, metadata=meta)
            written.append(atomic_write_bytes(path.with_suffix("." + fmt), buf.getvalue()))
    finally:
        plt.close(fig)
    return written


def compare_suite(suite_dir: Path, records: List[dict], metrics: Sequence[str] = ("mAP",),
                  resamples: int = RESAMPLES, seed: int = 0, ref: Optional[str] = None,
                  per_class: bool = False, log=print) -> List[Comparison]:
    """Print the comparison of every dataset's rows; with ``per_class`` write the CSV and
    figure under ``suite_dir``. Returns the comparisons."""
    suite_dir = Path(suite_dir)
    datasets = list(dict.fromkeys(r.get("dataset") for r in records))
    order = list(dict.fromkeys(r.get("table_row") or r["row"] for r in records))
    if ref is not None and ref not in order:
        raise TableError(f"--ref {ref!r} is not a row of {suite_dir}; rows: {', '.join(order)}")
    out = []
    for ds in datasets:
        rows = [x for x in order if any((r.get("table_row") or r["row"]) == x
                                        and r.get("dataset") == ds for r in records)]
        where = f" on {dataset_name(ds)}" if len(datasets) > 1 else ""
        missing: Dict[str, List[str]] = {}
        runs = pool_runs(suite_dir, records, rows, ds, missing)
        notes = missing_notes(missing)
        if ref is not None and ref in rows and ref not in runs:
            raise TableError(f"--ref {ref!r}: its runs have no predictions ({'; '.join(notes)})")
        res = compare_pool(runs, notes, where, metrics=list(metrics), resamples=resamples,
                           seed=seed, ref=ref if ref in runs else None, per_class=per_class)
        if res is None:
            log(f"nothing to compare{where}: fewer than two rows with predictions"
                + (f" ({' '.join(notes)})" if notes else ""))
            continue
        log(comparison_text(res, where))
        for n in notes:
            log(f"- {n}")
        if per_class:
            classes = list(next(r for r in records if r.get("dataset") == ds)["per_class_ap"])
            table = per_class_rows(res, classes)
            stem = "compare_per_class" + (f"_{ds}" if len(datasets) > 1 else "")
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["row", "reference", "class", "delta_AP", "ci_low", "ci_high"])
            w.writerows(table)
            files = [atomic_write_text(suite_dir / f"{stem}.csv", buf.getvalue())]
            if table:
                files += per_class_figure(table, res.ref, suite_dir / f"{stem}.svg")
            for f in files:
                log(f"wrote {f}")
        out.append(res)
    return out
