"""Sweep figures (the paper's Figure 4) from run records, sized for one paper column.

A suite opts in with ``table.figure`` (:class:`FigureSpec`): the swept setting is read
from each record's resolved ``config`` (``x``; ``x_of: len`` plots the length of a list,
e.g. k = len(model.dims)), the y value is a metric, mean ± std over seeds.

Output, next to the tables: ``<file>`` as PNG (300 dpi) plus the same figure as PDF and SVG
(vector, for the paper), and ``<stem>.tex``, a ``figure`` environment with the caption
(the spec's ``title`` without its "Figure N:" prefix, plus seeds and epoch selection). The
image itself has no title: the caption belongs in the paper. One panel per dataset, each
with its own y range, so a 1–2 point trend is not flattened by another dataset's level;
mean ± std as error bars and a shaded band. 3.25 in wide (one column of a CVPR or
IJCAI page) and included at that size, so no text is under 7 pt. matplotlib is
imported only when a figure is drawn, with the Agg backend (no display needed); the files
carry no dates, so redrawing the same records gives the same bytes.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Dict, List, Literal, Tuple

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..utils.io import atomic_write_bytes, atomic_write_text

WIDTH_IN = 3.25   # one column of CVPR (3.28 in) or IJCAI (3.33 in), included at natural size
PANEL_HEIGHT_IN = 1.55
FONT_PT = 7.0
_RC = {"font.size": FONT_PT, "axes.titlesize": FONT_PT, "axes.labelsize": FONT_PT,
       "xtick.labelsize": FONT_PT, "ytick.labelsize": FONT_PT, "legend.fontsize": FONT_PT,
       "font.family": "serif",
       "font.serif": ["Times New Roman", "Nimbus Roman", "TeX Gyre Termes", "DejaVu Serif"],
       "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
       "xtick.major.size": 2.5, "ytick.major.size": 2.5, "pdf.fonttype": 42,
       "svg.hashsalt": "gmbench", "svg.fonttype": "path"}


class FigureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: str                                   # dotted config key, e.g. model.top_m
    x_of: Literal["value", "len"] = "value"  # "len": x = len(config value)
    xlabel: str = ""
    metric: str = "mAP"
    ylabel: str = "mAP (%)"
    title: str = ""                          # the caption (in <stem>.tex), never in the image
    series: Dict[str, str] = {}              # dataset config name → panel title
    file: str = "figure.png"                 # written next to the tables (+ .pdf, .svg, .tex)


def x_value(record: dict, spec: FigureSpec):
    """The swept setting of one record (from its resolved config)."""
    node = record.get("config", {})
    for part in spec.x.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"run {record.get('row')!r} seed {record.get('seed')}: its config "
                           f"has no {spec.x!r} (table.figure.x)")
        node = node[part]
    if spec.x_of == "len":
        return len(node)
    return node


def _metric(record: dict, spec: FigureSpec, select: str):
    from .model import selected_metrics
    try:
        return selected_metrics(record, select).get(spec.metric)
    except ValueError as e:  # TableError: a figure raises ValueError with the same message
        raise ValueError(str(e).replace("render with", "draw the figure with")) from None


def sweep_series(records: List[dict], spec: FigureSpec, select: str = "final"
                 ) -> Dict[str, List[Tuple[float, float, float, int]]]:
    """dataset → [(x, mean %, std % (0 for one seed), n seeds)] sorted by x; series in
    first-seen order."""
    acc: Dict[str, Dict[float, List[float]]] = {}
    for r in records:
        v = _metric(r, spec, select)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        acc.setdefault(r["dataset"], {}).setdefault(x_value(r, spec), []).append(100.0 * v)
    out = {}
    for ds, by_x in acc.items():
        out[ds] = [(x, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
                   for x, v in sorted(by_x.items())]
    return out


def y_range(pts: List[Tuple[float, float, float, int]]) -> Tuple[float, float]:
    """A panel's y limits: every mean ± std inside, 15 % margin, at least 1 point tall."""
    lo = min(m - s for _, m, s, _ in pts)
    hi = max(m + s for _, m, s, _ in pts)
    span = max(hi - lo, 1.0)
    mid = (lo + hi) / 2
    return mid - 0.65 * span, mid + 0.65 * span


def draw(records: List[dict], spec: FigureSpec, select: str = "final"):
    """The matplotlib Figure (caller closes it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = sweep_series(records, spec, select)
    if not series:
        raise ValueError(f"no finished run has metric {spec.metric!r} to plot")
    with matplotlib.rc_context(_RC):
        fig, axes = plt.subplots(1, len(series), figsize=(WIDTH_IN, PANEL_HEIGHT_IN),
                                 squeeze=False)
        colors = plt.get_cmap("tab10").colors
        for i, (ax, (ds, pts)) in enumerate(zip(axes[0], series.items())):
            # swept values sit at equal spacing (5, 10, 20, 35, 50 would crowd on a linear
            # axis at this width); the ticks carry the values
            xs = np.arange(len(pts), dtype=float)
            ys = np.array([p[1] for p in pts])
            es = np.array([p[2] for p in pts])
            c = colors[i % len(colors)]
            ax.fill_between(xs, ys - es, ys + es, color=c, alpha=0.2, linewidth=0)
            ax.errorbar(xs, ys, yerr=es, color=c, marker="o", markersize=3, linewidth=1.0,
                        elinewidth=0.8, capsize=2, capthick=0.8)
            ax.set_xticks(xs)
            ax.set_xticklabels([f"{p[0]:g}" for p in pts])
            ax.set_xlim(-0.4, len(pts) - 0.6)
            ax.set_ylim(*y_range(pts))
            ax.set_title(spec.series.get(ds, ds), pad=3)
            ax.grid(True, alpha=0.3, linewidth=0.4)
            ax.tick_params(pad=1.5)
        axes[0][0].set_ylabel(spec.ylabel)
        fig.supxlabel(spec.xlabel or spec.x, fontsize=FONT_PT)
        fig.tight_layout(pad=0.2, w_pad=0.5)
    return fig


def caption(records: List[dict], spec: FigureSpec, select: str = "final") -> str:
    """The figure's caption: the spec's title without "Figure N:", then how it was measured."""
    title = re.sub(r"^\s*Figure\s+\d+\s*(\([a-z]\))?\s*[:.]\s*", "", spec.title).strip()
    seeds = sorted({p[3] for pts in sweep_series(records, spec, select).values() for p in pts})
    n = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    when = {"best": "at each run's best epoch, selected on the test split",
            "best_of_ema": "at each run's best epoch and the better of its raw and EMA models, "
                           "selected on the test split"}.get(select, "at the final training epoch")
    how = (f"{spec.ylabel}: mean ± std over {n} seeds (bars and band) {when}; one panel per "
           f"dataset, each with its own y range.")
    return f"{title.rstrip('.')}. {how}" if title else how


def plot_sweep(records: List[dict], spec: FigureSpec, path: Path, select: str = "final"
               ) -> List[Path]:
    """Draw the sweep to ``path`` (PNG) and beside it .pdf, .svg and .tex (atomically);
    returns the paths written."""
    import matplotlib.pyplot as plt
    from .latex import latex_escape

    path = Path(path)
    fig = draw(records, spec, select)
    out = []
    meta = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None,
                                               "CreationDate": None},
            "svg": {"Creator": None, "Date": None}}
    try:
        with plt.rc_context(_RC):
            for fmt in ("png", "pdf", "svg"):
                buf = io.BytesIO()
                fig.savefig(buf, format=fmt, dpi=300, metadata=meta[fmt])
                out.append(atomic_write_bytes(path.with_suffix(f".{fmt}"), buf.getvalue()))
    finally:
        plt.close(fig)
    label = re.sub(r"[^A-Za-z0-9:_-]", "-", path.stem)
    tex = (f"% needs \\usepackage{{graphicx}}; the PDF beside this file, {WIDTH_IN} in wide: "
           f"at natural size its text is 7 pt\n"
           "\\begin{figure}[t]\n\\centering\n"
           f"\\includegraphics{{{path.with_suffix('.pdf').name}}}\n"
           f"\\caption{{{latex_escape(caption(records, spec, select))}}}\n"
           f"\\label{{fig:{label}}}\n\\end{{figure}}\n")
    out.append(atomic_write_text(path.with_suffix(".tex"), tex))
    return out
