"""Sweep figures (the paper's Figure 4) from run records: one line per dataset.

A suite opts in with ``table.figure`` (:class:`FigureSpec`): the swept setting is read
from each record's resolved ``config`` (``x``; ``x_of: len`` plots the length of a list,
e.g. k = len(model.dims)), the y value is a metric, mean ± std over seeds. matplotlib is
imported only when a figure is drawn, with the Agg backend (no display needed).
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Dict, List, Literal, Tuple

import numpy as np
from pydantic import BaseModel, ConfigDict

from .utils.io import atomic_write_bytes


class FigureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: str                                   # dotted config key, e.g. model.top_m
    x_of: Literal["value", "len"] = "value"  # "len": x = len(config value)
    xlabel: str = ""
    metric: str = "mAP"
    ylabel: str = "mAP (%)"
    title: str = ""
    series: Dict[str, str] = {}              # dataset config name → legend label
    file: str = "figure.png"                 # written next to the tables


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


def sweep_series(records: List[dict], spec: FigureSpec) -> Dict[str, List[Tuple[float, float, float, int]]]:
    """dataset → [(x, mean %, std % (0 for one seed), n seeds)] sorted by x; series in
    first-seen order."""
    acc: Dict[str, Dict[float, List[float]]] = {}
    for r in records:
        v = r.get("metrics", {}).get(spec.metric)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        acc.setdefault(r["dataset"], {}).setdefault(x_value(r, spec), []).append(100.0 * v)
    out = {}
    for ds, by_x in acc.items():
        out[ds] = [(x, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
                   for x, v in sorted(by_x.items())]
    return out


def plot_sweep(records: List[dict], spec: FigureSpec, path: Path) -> Path:
    """Draw the sweep into a PNG at ``path`` (written atomically); returns the path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = sweep_series(records, spec)
    if not series:
        raise ValueError(f"no finished run has metric {spec.metric!r} to plot")
    fig, ax = plt.subplots(figsize=(4.2, 3.2), dpi=150)
    markers = "osD^v<>"
    for i, (ds, pts) in enumerate(series.items()):
        xs, ys, es = [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]
        ax.errorbar(xs, ys, yerr=es, marker=markers[i % len(markers)], capsize=3,
                    linewidth=1.5, markersize=4, label=spec.series.get(ds, ds))
    xs_all = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xticks(xs_all)
    ax.set_xlabel(spec.xlabel or spec.x)
    ax.set_ylabel(spec.ylabel)
    if spec.title:
        ax.set_title(spec.title)
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    # No software/date metadata: re-rendering the same records gives the same bytes.
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
