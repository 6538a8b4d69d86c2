"""LaTeX (booktabs) tables that fit the page of a two-column IJCAI / CVPR paper.

The renderer estimates each candidate layout's natural width from Times font metrics
(:mod:`.widths`) and takes the first that fits, in this order of preference:

1. a one-column ``table`` (column width), then a two-column ``table*`` (text width);
2. within ``table*``, all columns in one block, then the columns split into two stacked
   halves (at a header-group boundary where there is one; Table 1's 21 classes);
3. std and the delta to the published value as a suffix in the cell, then on a line of
   their own below the row (``std``/``delta`` 'auto'; or fixed: 'suffix', 'row', 'off');
4. ``\\normalsize`` with the default ``\\tabcolsep`` (6 pt), then ``\\small`` with 4 pt, then
   ``\\small`` with 2.5 pt.

Only when none fits is the table scaled down (``\\resizebox``), and never so far that its
text drops below 0.85 of the page's 10 pt; a table that would need more raises a clear
error that names the options to try. Captions are the paper's words plus seeds, epoch
selection, what the parentheses hold and how the marks are ranked (:mod:`.notes`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

from .fmt import ci_text, fmt, fmt_std
from .markdown import ci_columns, ci_header
from .marks import rank_marks
from .model import Table, TableError, spans
from .notes import caption, notes
from .paired import MARK
from .widths import COLUMN_PT, SIZES, TEXT_PT, Segment, width

LAYOUT_MODES = ("auto", "suffix", "row", "off")
MIN_TEXT_SCALE = 0.85          # of the page's 10 pt: 8.5 pt at the smallest
PAGE_PT = 10.0
_FONTS = (("normalsize", 6.0), ("small", 4.0), ("small", 2.5))

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "±": r"$\pm$", "−": r"$-$", "–": "--", "†": r"$^\dagger$", "Δ": r"$\Delta$",
        "×": r"$\times$", "↓": r"$\downarrow$", "≥": r"$\geq$", ">": r"$>$", "<": r"$<$", "|": r"$|$"}


def latex_escape(s: str) -> str:
    """Plain Unicode text → LaTeX text (specials escaped, ± − – † Δ as TeX prints them)."""
    return re.sub("[" + re.escape("".join(_TEX)) + "]", lambda m: _TEX[m.group()], s)


@dataclass(frozen=True)
class Layout:
    env: str = "table"           # table | table*
    size: str = "normalsize"
    sep: float = 6.0             # \tabcolsep, pt
    std: str = "suffix"          # suffix | row | off
    delta: str = "suffix"
    halves: bool = False
    scale: float = 1.0

    @property
    def target(self) -> float:
        return COLUMN_PT if self.env == "table" else TEXT_PT

    @property
    def pt(self) -> float:
        return SIZES[self.size]


Cell = Tuple[str, List[Segment]]   # (LaTeX, what it prints, for the width estimate)


def _plain(text: str, style: str = "r", size: str = "base") -> Cell:
    return latex_escape(text), [(text, style, size)]


def _signed_cell(d: float, size: str) -> Cell:
    sign = "" if d == 0 else ("+" if d > 0 else "−")
    return _plain(f"({sign}{abs(d):.1f})", "r", size)


def _num(r: dict, c: str, mark: Optional[str], lay: Layout, below: bool = False) -> Cell:
    m, s = r["values"][c]
    style = "b" if mark == "best" else "r"
    text = fmt(m, c)
    if s is not None and lay.std == "suffix":
        text += "±" + fmt_std(s, c)
    tex, segs = _plain(text, style)
    if mark == "best":
        tex = rf"\textbf{{{tex}}}"
    elif mark == "second":
        tex = rf"\underline{{{tex}}}"
    if below:
        mtex, msegs = _plain(MARK)
        tex, segs = tex + mtex, segs + msegs
    d = r["delta"].get(c)
    if d is not None and lay.delta == "suffix":
        dtex, dsegs = _signed_cell(d, "scriptsize")
        tex += rf"\,{{\scriptsize {dtex}}}"
        segs = segs + [("\u2009", "r", "base")] + dsegs
    return tex, segs


def _sub_rows(r: dict, cols: Sequence[str], lay: Layout) -> List[List[Cell]]:
    """The std line and the delta line under a reproduced row (layout 'row')."""
    out = []
    if lay.std == "row" and any(r["values"][c][1] is not None for c in cols):
        out.append([_plain("")] + [_plain("±" + fmt_std(r["values"][c][1], c))
                                   if r["values"][c][1] is not None else _plain("")
                                   for c in cols])
    if lay.delta == "row" and any(r["delta"].get(c) is not None for c in cols):
        out.append([_plain("")] + [_signed_cell(r["delta"][c], "base")
                                   if r["delta"].get(c) is not None else _plain("")
                                   for c in cols])
    return out


def _halves(t: Table) -> List[List[str]]:
    """Split the columns in two, at the header-group boundary nearest the middle."""
    n = len(t.cols)
    cuts, i = [], 0
    for _, k in t.groups[:-1]:
        i += k
        cuts.append(i)
    mid = (n + 1) // 2
    cut = min(cuts, key=lambda x: abs(x - mid)) if cuts else mid
    return [t.cols[:cut], t.cols[cut:]]


def _groups_of(t: Table, cols: Sequence[str]) -> List[Tuple[Optional[str], int]]:
    groups: Dict[str, List[str]] = {}
    for c, g in t.group_of().items():
        groups.setdefault(g, []).append(c)
    return spans(cols, groups)


@dataclass
class _Block:
    """One block of a tabular: header group spans, header cells, body lines."""
    spans: List[Tuple[Optional[str], int]]
    header: List[Cell]
    body: List[object]          # list of cells, or ("section", Cell) / ("rule",)


def _blocks(t: Table, lay: Layout, ranked: Dict, cis: Sequence[str] = ()) -> List[_Block]:
    parts = _halves(t) if lay.halves else [t.cols]
    ref = t.published is not None
    sig = t.signif
    blocks = []
    for k, cols in enumerate(parts):
        extra = list(cis) if k == len(parts) - 1 else []   # CI columns close the last block
        body: List[object] = []
        prev = None
        for i, r in enumerate(t.rows):
            if ref and r["source"] != prev:
                if prev is not None:
                    body.append(("rule",))
                title = (f"Published ({t.published.short_source})" if r["source"] == "published"
                         else "Reproduced (gmbench)")
                body.append(("section", _plain(title, "i")))
                prev = r["source"]
            name = r["row"] + ("†" if r["protocol"]["test_annotations"] else "")
            body.append([_plain(name)]
                        + [_num(r, c, ranked.get((i, c)), lay, bool(sig and sig.below(r["row"], c)))
                           for c in cols]
                        + [_plain(ci_text(sig.cells.get((r["row"], c)))
                                  if r["source"] == "reproduced" else "") for c in extra])
            body += [x + [_plain("")] * len(extra) for x in _sub_rows(r, cols, lay)]
        head = ([_plain("Method")] + [_plain(t.header(c)) for c in cols]
                + [_plain(f"{ci_header(t, c)} [95% CI]") for c in extra])
        groups = _groups_of(t, cols)
        blocks.append(_Block(groups + [(None, len(extra))] if groups and extra else groups,
                             head, body))
    return blocks


def natural_width(blocks: List[_Block], lay: Layout) -> float:
    """Estimated width in pt of the tabular holding ``blocks`` (before any scaling)."""
    pt, pad = lay.pt, 2 * lay.sep
    ncol = 1 + max(len(b.header) - 1 for b in blocks)
    colw = [0.0] * ncol
    for b in blocks:
        for row in [b.header] + [x for x in b.body if isinstance(x, list)]:
            for j, (_, segs) in enumerate(row):
                colw[j] = max(colw[j], width(segs, pt))
    total = sum(w + pad for w in colw)
    for b in blocks:
        j = 1
        for g, k in b.spans:         # a group header wider than its columns widens the last
            if g:
                need = width([(g, "r", "base")], pt) + pad
                have = sum(colw[j:j + k]) + pad * k
                total += max(0.0, need - have)
            j += k
        for x in b.body:
            if isinstance(x, tuple) and x[0] == "section":
                total = max(total, width(x[1][1], pt) + pad)
    return total


def _tabular(blocks: List[_Block], lay: Layout) -> List[str]:
    ncol = 1 + max(len(b.header) - 1 for b in blocks)
    lines = [r"\begin{tabular}{l" + "c" * (ncol - 1) + "}", r"\toprule"]
    for bi, b in enumerate(blocks):
        if bi:
            lines.append(r"\midrule[\heavyrulewidth]")
        pad = [""] * (ncol - len(b.header))
        if b.spans:
            cells, rules, col = [""], [], 2
            for g, k in b.spans:
                if g:
                    cells.append(rf"\multicolumn{{{k}}}{{c}}{{{latex_escape(g)}}}")
                    rules.append(rf"\cmidrule(lr){{{col}-{col + k - 1}}}")
                else:
                    cells += [""] * k
                col += k
            lines += [" & ".join(cells + pad) + r" \\", " ".join(rules)]
        lines += [" & ".join([c for c, _ in b.header] + pad) + r" \\", r"\midrule"]
        for x in b.body:
            if isinstance(x, tuple):
                lines.append(r"\midrule" if x[0] == "rule" else
                             rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{x[1][0]}}}}} \\")
            else:
                lines.append(" & ".join([c for c, _ in x] + pad) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return lines


def _candidates(t: Table, std: str, delta: str):
    """Layouts in order of preference (module docstring)."""
    has_std = any(v[1] is not None for r in t.reproduced for v in r["values"].values())
    has_delta = any(d is not None for r in t.reproduced for d in r["delta"].values())
    stds = (("suffix", "row") if std == "auto" else (std,)) if has_std else ("off",)
    deltas = (("suffix", "row") if delta == "auto" else (delta,)) if has_delta else ("off",)
    combos = sorted({(s, d) for s in stds for d in deltas},
                    key=lambda sd: (sd[0] == "row") + (sd[1] == "row") + 0.5 * (sd[1] == "row"))
    for env in ("table", "table*"):
        for halves in ((False, True) if env == "table*" and len(t.cols) >= 8 else (False,)):
            for s, d in combos:
                for size, sep in _FONTS:
                    yield Layout(env, size, sep, s, d, halves)


def choose_layout(t: Table, ranked: Dict, std: str = "auto", delta: str = "auto",
                  cis: Sequence[str] = ()) -> Tuple[Layout, float]:
    """The first layout that fits (module docstring) and its estimated natural width."""
    for opt, name in ((std, "std"), (delta, "delta")):
        if opt not in LAYOUT_MODES:
            raise TableError(f"--{name} {opt!r}: choose from {', '.join(LAYOUT_MODES)}")
    tried = [(lay, natural_width(_blocks(t, lay, ranked, cis), lay))
             for lay in _candidates(t, std, delta)]
    for lay, w in tried:
        if w <= lay.target:
            return lay, w
    for lay, w in tried:
        scale = lay.target / w
        if lay.pt * scale >= MIN_TEXT_SCALE * PAGE_PT - 1e-9:
            return replace(lay, scale=scale), w
    lay, w = min(tried, key=lambda x: x[1] / x[0].target)
    raise TableError(f"table {t.suite!r} is {w:.0f} pt wide at best ({lay.env}, \\{lay.size}, "
                     f"std {lay.std}, delta {lay.delta}) and the page has {lay.target:.0f} pt; "
                     f"fitting it would shrink the text below {MIN_TEXT_SCALE:.2f} of its size. "
                     f"Try --std row or off, --delta row or off, or fewer table.columns")


def to_latex(t: Table, marks: str = "separate", std: str = "auto", delta: str = "auto",
             ci: bool = False) -> str:
    """The table environment; the first line says which packages it needs. ``ci``: a
    column with each row's difference to the best row and its 95% bootstrap CI."""
    ranked = rank_marks(t.cols, t.rows, marks)
    cis = ci_columns(t, ci)
    lay, w = choose_layout(t, ranked, std, delta, cis)
    scaled = lay.scale < 1.0
    lines = [r"% needs \usepackage{booktabs}" + (r" and \usepackage{graphicx}" if scaled else "")
             + ("; spans both columns of a two-column page" if lay.env == "table*" else ""),
             f"% estimated width in Times at \\{lay.size}: {w:.0f} pt; the "
             f"{'column' if lay.env == 'table' else 'text'} is {lay.target:.0f} pt (CVPR; IJCAI "
             f"is wider)" + (f"; scaled by {lay.scale:.3f}" if scaled else ""), rf"\begin{{{lay.env}}}[t]", r"\centering"]
    if lay.size != "normalsize":
        lines.append(rf"\{lay.size}")
    if lay.sep != 6.0:
        lines.append(rf"\setlength{{\tabcolsep}}{{{lay.sep:g}pt}}")
    tab = _tabular(_blocks(t, lay, ranked, cis), lay)
    if scaled:
        tab = [r"\resizebox{\linewidth}{!}{%"] + tab + ["}"]
    lines += tab
    extra = notes(t)
    if extra:
        lines += [r"\par\vspace{2pt}", r"\begin{minipage}{\linewidth}\footnotesize"]
        lines += [latex_escape(n) + (r"\par" if k < len(extra) - 1 else "")
                  for k, n in enumerate(extra)]
        lines.append(r"\end{minipage}")
    lines.append(rf"\caption{{{latex_escape(caption(t, marks, lay.std, lay.delta))}}}")
    lines.append(rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:_-]', '-', t.suite)}}}")
    lines.append(rf"\end{{{lay.env}}}")
    return "\n".join(lines) + "\n"
