"""Result tables from runs.jsonl alone: CSV (tidy), Markdown and LaTeX (booktabs).

Values are percentages with one decimal (as the paper prints them), mean ± std
over seeds. Columns come from the suite's ``table.columns``:

* metric keys (``mAP``, ``CF1``, ``OF1@3`` ...), ``AP:<class>`` / ``AP:*`` for per-class AP,
  ``chance mAP`` (via ``table.chance``), ``epoch_s`` (seconds of the last training epoch);
* ``<dataset>/<key>``: the value from the runs on that dataset config only, for tables
  whose rows span datasets (Table 4: one row per variant, MS-COCO and VOC columns). Suite
  rows with the same ``table_row`` fill one table row.

With ``table.reference`` (a published table, see :mod:`gmbench.reference`) the published
rows are rendered first and marked as such, each reproduced row shows its delta to the
published row it names in ``reference``, and the paper's headers and grouped headers
(All / Top-3, MS-COCO / VOC) are used. Best value per column in bold, second underlined
(the paper's red / blue), over published and reproduced rows together.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from tabulate import tabulate

from .metrics import format_percent
from .utils.io import atomic_write_text, read_jsonl

UNRANKED = ("chance mAP", "epoch_s")  # not results where higher is better
SECONDS = ("epoch_s",)


def _split_col(col: str) -> Tuple[Optional[str], str]:
    """'coco2014/mAP' → ('coco2014', 'mAP'); 'mAP' → (None, 'mAP')."""
    if "/" in col and not col.startswith("AP:"):
        ds, key = col.split("/", 1)
        return ds, key
    return None, col


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt(x: float, col: str = "") -> str:
    if _nan(x):
        return "–"
    return f"{x:.1f}" if _split_col(col)[1] in SECONDS else format_percent(x)


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
    ds, key = _split_col(col)
    if ds is not None and rec.get("dataset") != ds:
        return None
    if key == "chance mAP":
        return rec.get("chance_mAP")
    if key == "epoch_s":
        hist = (rec.get("train") or {}).get("history") or []
        return hist[-1].get("train_s") if hist else None
    if key.startswith("AP:"):
        return rec.get("per_class_ap", {}).get(key[3:])
    return rec.get("metrics", {}).get(key)


def _table_row(rec: dict) -> str:
    return rec.get("table_row") or rec["row"]


def aggregate(records: List[dict]) -> Tuple[List[str], List[dict]]:
    """Group records by table row (in suite order): per column mean and std over seeds."""
    if not records:
        raise ValueError("no finished runs to tabulate")
    latest = records[-1]
    labels = list(latest.get("row_order") or [])
    for r in records:
        if r["row"] not in labels:
            labels.append(r["row"])
    members: Dict[str, List[str]] = {}
    for label in labels:
        recs = [r for r in records if r["row"] == label]
        if recs:
            members.setdefault(_table_row(recs[-1]), []).append(label)
    cols = _columns(latest.get("table", {}), records)
    rows = []
    for tr, labs in members.items():
        recs = sorted((r for r in records if r["row"] in labs), key=lambda r: r["seed"])
        datasets = list(dict.fromkeys(r["dataset"] for r in recs))
        by_ds = {}
        for label in labs:
            ds = next(r["dataset"] for r in recs if r["row"] == label)
            if ds in by_ds:
                raise ValueError(f"table row {tr!r}: suite rows {by_ds[ds]!r} and {label!r} both "
                                 f"fill it on dataset {ds!r}; give them different table_row")
            by_ds[ds] = label
        row = {"row": tr, "method": "+".join(dict.fromkeys(r["method"] for r in recs)),
               "dataset": "+".join(datasets), "seeds": sorted({r["seed"] for r in recs}),
               "source": "reproduced", "values": {}, "delta": {},
               "reference": next((r.get("reference") for r in recs if r.get("reference")), None)}
        for c in cols:
            if len(datasets) > 1 and _split_col(c)[0] is None:
                raise ValueError(f"table row {tr!r} spans datasets {datasets}; column {c!r} "
                                 f"must name one, e.g. {datasets[0]}/{c}")
            vals = [v for v in (_value(r, c) for r in recs) if not _nan(v)]
            mean = float(np.mean(vals)) if vals else float("nan")
            std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
            row["values"][c] = (mean, std)
        rows.append(row)
    return cols, rows


@dataclass
class Table:
    """Everything the renderers need: columns, rows (published first), headers."""
    suite: str
    cols: List[str]
    rows: List[dict]
    headers: Dict[str, str] = field(default_factory=dict)
    groups: List[Tuple[Optional[str], int]] = field(default_factory=list)  # contiguous spans
    published: Optional[object] = None   # gmbench.reference.PublishedTable
    reference: Optional[str] = None

    def header(self, col: str) -> str:
        ds, key = _split_col(col)
        return self.headers.get(col, key if ds else col)


def _spans(cols: Sequence[str], groups: Dict[str, List[str]]) -> List[Tuple[Optional[str], int]]:
    group_of = {c: g for g, cs in (groups or {}).items() for c in cs}
    spans: List[Tuple[Optional[str], int]] = []
    for c in cols:
        g = group_of.get(c)
        if spans and spans[-1][0] == g:
            spans[-1] = (g, spans[-1][1] + 1)
        else:
            if g is not None and any(s[0] == g for s in spans):
                raise ValueError(f"the columns of header group {g!r} are not next to each "
                                 f"other in table.columns")
            spans.append((g, 1))
    return spans if any(g for g, _ in spans) else []


def _delta(mean: float, published: Optional[float], col: str) -> Optional[float]:
    """Reproduced − published in points, from the values as displayed (one decimal)."""
    if published is None or _nan(mean):
        return None
    return round(float(_fmt(mean, col)) - float(_fmt(published, col)), 1) + 0.0


def build_table(records: List[dict]) -> Table:
    """Aggregate the records and, where the suite names one, merge the published table."""
    cols, rows = aggregate(records)
    spec = records[-1].get("table", {}) or {}
    t = Table(suite=records[-1].get("suite", ""), cols=cols, rows=rows,
              reference=spec.get("reference"))
    groups = spec.get("group_header") or {}
    if t.reference:
        from .reference import load_table
        pub = t.published = load_table(t.reference)
        t.headers = dict(pub.headers)
        groups = groups or pub.groups
        published_rows = []
        for pr in pub.rows:
            published_rows.append({
                "row": pr.display, "method": "", "dataset": "+".join(np.atleast_1d(pub.dataset)),
                "seeds": [], "source": "published", "reference": None, "delta": {},
                "name": pr.name, "cite": pr.cite or "",
                "values": {c: (float("nan") if pub.value(pr.name, c) is None
                               else pub.value(pr.name, c), None) for c in cols}})
        names = [r.name for r in pub.rows]
        for r in rows:
            if r["reference"] and r["reference"] not in names:
                raise ValueError(f"row {r['row']!r}: reference {r['reference']!r} is not a row of "
                                 f"{t.reference}; rows: {', '.join(names)}")
            for c in cols:
                if r["reference"]:
                    r["delta"][c] = _delta(r["values"][c][0], pub.value(r["reference"], c), c)
        t.rows = published_rows + rows
    t.groups = _spans(cols, groups)
    return t


def _rank_marks(cols, rows) -> Dict[Tuple[int, str], str]:
    """Best value of each column 'best', second 'second' (higher is better; compared as
    displayed, so equal printed values share a mark). Only rows on the same dataset are
    compared: a sweep over several datasets gets a best per dataset."""
    marks = {}
    for c in cols:
        ds, key = _split_col(c)
        if key in UNRANKED:
            continue
        shown = [None if _nan(r["values"][c][0]) else float(_fmt(r["values"][c][0], c)) for r in rows]
        for group in dict.fromkeys(ds or r["dataset"] for r in rows):
            idx = [i for i, r in enumerate(rows) if (ds or r["dataset"]) == group]
            ranked = sorted({shown[i] for i in idx if shown[i] is not None}, reverse=True)
            for i in idx:
                if shown[i] is not None and shown[i] == ranked[0]:
                    marks[(i, c)] = "best"
                elif shown[i] is not None and len(ranked) > 1 and shown[i] == ranked[1]:
                    marks[(i, c)] = "second"
    return marks


def _cell(mean: float, std, col: str = "") -> str:
    return _fmt(mean, col) if std is None else f"{_fmt(mean, col)} ± {_fmt(std, col)}"


def _signed(d: float) -> str:
    return "0.0" if d == 0 else f"{d:+.1f}"


def _source(r: dict) -> str:
    return "published" if r["source"] == "published" else f"reproduced, {len(r['seeds'])} seeds"


def to_csv(t: Table) -> str:
    """One row per method. With a reference: source, citation, and a delta per column."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    ref = t.published is not None
    head = ["row"] + (["source", "cite", "reference"] if ref else []) + ["method", "dataset", "n_seeds"]
    w.writerow(head + [x for c in t.cols for x in ((c, f"{c} std", f"{c} delta") if ref else (c, f"{c} std"))])
    for r in t.rows:
        pub = r["source"] == "published"
        vals = []
        for c in t.cols:
            m, s = r["values"][c]
            vals += ["" if _nan(m) else _fmt(m, c), "" if s is None else _fmt(s, c)]
            if ref:
                d = r["delta"].get(c)
                vals.append("" if d is None else _signed(d))
        lead = [r["name"] if pub else r["row"]]
        if ref:
            lead += [t.published.source if pub else "gmbench", r.get("cite", ""),
                     r["reference"] or ""]
        w.writerow(lead + [r["method"], r["dataset"], "" if pub else len(r["seeds"])] + vals)
    return buf.getvalue()


def _md_header(t: Table) -> List[str]:
    group_of = {}
    i = 0
    for g, n in t.groups:
        for c in t.cols[i:i + n]:
            group_of[c] = g
        i += n
    return [f"{group_of[c]} {t.header(c)}" if group_of.get(c) else t.header(c) for c in t.cols]


def to_markdown(t: Table) -> str:
    marks = _rank_marks(t.cols, t.rows)
    ref = t.published is not None
    body = []
    for i, r in enumerate(t.rows):
        cells = []
        for c in t.cols:
            text = _cell(*r["values"][c], c)
            text = {"best": f"**{text}**", "second": f"_{text}_"}.get(marks.get((i, c)), text)
            d = r["delta"].get(c)
            cells.append(text if d is None else f"{text} ({_signed(d)})")
        body.append([r["row"]] + ([_source(r)] if ref else []) + cells)
    head = ["Method"] + (["Source"] if ref else []) + _md_header(t)
    out = tabulate(body, headers=head, tablefmt="github", disable_numparse=True) + "\n"
    if ref:
        note = (f"{t.published.title}\n\nPublished rows: {t.published.source}. Reproduced rows: "
                f"gmbench suite {t.suite}, mean ± std over seeds, (Δ) = reproduced − published in "
                f"points. Best in **bold**, second in _italics_.\n\n")
        out = note + out
    return out


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(s: str) -> str:
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _TEX[m.group()], s)


def _tex_num(s: str) -> str:
    return s.replace("–", "--")


def _tex_cell(r: dict, c: str, mark: Optional[str]) -> str:
    m, s = r["values"][c]
    text = _tex_num(_fmt(m, c)) if s is None else rf"{_fmt(m, c)}$\pm${_fmt(s, c)}"
    if mark == "best":
        text = rf"\textbf{{{text}}}"
    elif mark == "second":
        text = rf"\underline{{{text}}}"
    d = r["delta"].get(c)
    if d is not None:
        sign = "" if d == 0 else ("+" if d > 0 else "$-$")
        text += rf"\,{{\scriptsize({sign}{abs(d):.1f})}}"
    return text


def to_latex(t: Table, caption: str = "") -> str:
    """booktabs table; wide tables (> 8 columns) go in table* scaled to the text width."""
    marks = _rank_marks(t.cols, t.rows)
    n = len(t.cols)
    ref = t.published is not None
    wide = n > 8
    env = "table*" if wide else "table"
    lines = [r"% needs \usepackage{booktabs}" + (r" and \usepackage{graphicx}" if wide else "")]
    lines += [rf"\begin{{{env}}}[t]", r"\centering"]
    if ref:
        caption = (latex_escape(t.published.title) + " Published rows: "
                   + latex_escape(t.published.source) + "; reproduced rows: gmbench suite "
                   + latex_escape(t.suite) + r", mean$\pm$std over seeds, (difference to the "
                   r"published value in points). Best in bold, second underlined.")
    elif caption:
        caption = latex_escape(caption)
    if caption:
        lines.append(rf"\caption{{{caption}}}")
    lines.append(rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:_-]', '-', t.suite)}}}")
    if wide:
        lines.append(r"\resizebox{\textwidth}{!}{%")
    lines += [r"\begin{tabular}{l" + "c" * n + "}", r"\toprule"]
    if t.groups:
        cells, rules, col = [""], [], 2
        for g, k in t.groups:
            if g:
                cells.append(rf"\multicolumn{{{k}}}{{c}}{{{latex_escape(g)}}}")
                rules.append(rf"\cmidrule(lr){{{col}-{col + k - 1}}}")
            else:
                cells += [""] * k
            col += k
        lines += [" & ".join(cells) + r" \\", " ".join(rules)]
    lines += [" & ".join(["Method"] + [latex_escape(t.header(c)) for c in t.cols]) + r" \\",
              r"\midrule"]
    prev = None
    for i, r in enumerate(t.rows):
        if ref and r["source"] != prev:
            if prev is not None:
                lines.append(r"\midrule")
            title = (rf"Published ({latex_escape(t.published.source)})" if r["source"] == "published"
                     else r"Reproduced with gmbench (mean$\pm$std over seeds)")
            lines.append(rf"\multicolumn{{{n + 1}}}{{l}}{{\textit{{{title}}}}} \\")
            prev = r["source"]
        cells = [latex_escape(r["row"])] + [_tex_cell(r, c, marks.get((i, c))) for c in t.cols]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if wide:
        lines.append("}")
    lines.append(rf"\end{{{env}}}")
    return "\n".join(lines) + "\n"


def write_tables(suite_dir: Path, formats: Sequence[str] = ("csv", "md")) -> List[Path]:
    """Render ``suite_dir/runs.jsonl`` into table.{csv,md,tex} (and the suite's figure, if it
    has ``table.figure``); returns the paths written."""
    suite_dir = Path(suite_dir)
    records = [r for r in read_jsonl(suite_dir / "runs.jsonl") if r.get("status") == "finished"]
    if not records:
        raise FileNotFoundError(f"{suite_dir / 'runs.jsonl'} has no finished runs; run the suite first")
    t = build_table(records)
    render = {"csv": lambda: to_csv(t), "md": lambda: to_markdown(t),
              "tex": lambda: to_latex(t, caption=f"gmbench suite {t.suite}")}
    written = []
    for fmt in formats:
        if fmt not in render:
            raise ValueError(f"unknown table format {fmt!r}; choose from csv, md, tex")
        written.append(atomic_write_text(suite_dir / f"table.{fmt}", render[fmt]()))
    fig = (records[-1].get("table") or {}).get("figure")
    if fig:
        from .figures import FigureSpec, plot_sweep
        spec = FigureSpec.model_validate(fig)
        written.append(plot_sweep(records, spec, suite_dir / spec.file))
    return written
