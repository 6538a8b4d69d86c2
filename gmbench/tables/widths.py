"""Natural width of table text, estimated from Times font metrics (no TeX needed).

The LaTeX renderer sizes its tables for the page of an IJCAI or CVPR paper: Times text
(mathptmx / newtx), two columns. The widths below are the advance widths, in 1/1000 em,
of the printable ASCII characters '!'..'~' of Times Roman, Bold and Italic as TeX uses them
(read once from the TeX fonts ptmr7t, ptmb7t and ptmri7t with tftopl). Kerning is ignored
(it only narrows text); tests compile the tables with pdflatex and compare.
"""
from __future__ import annotations

from typing import Iterable, Tuple

# the page: CVPR's 3.25 in columns / 6.875 in text are the narrower of the two venues
# (IJCAI: 3.33 in / 7 in), so a table sized for CVPR fits both
PT_PER_IN = 72.27
COLUMN_PT = 3.25 * PT_PER_IN
TEXT_PT = 6.875 * PT_PER_IN
SIZES = {"normalsize": 10.0, "small": 9.0, "footnotesize": 8.0, "scriptsize": 7.0}

_W = {
    "r": (333, 444, 500, 500, 833, 778, 333, 333, 333, 500, 564, 250, 333, 250, 278, 500, 500,
          500, 500, 500, 500, 500, 500, 500, 500, 278, 278, 333, 564, 444, 444, 921,
          722, 667, 667, 722, 611, 556, 722, 722, 333, 389, 722, 611, 889, 722, 722,
          556, 722, 667, 556, 611, 722, 722, 944, 722, 722, 611, 333, 444, 333, 333,
          333, 333, 444, 500, 444, 500, 444, 333, 500, 500, 278, 278, 500, 278, 778,
          500, 500, 500, 500, 333, 389, 278, 500, 500, 722, 500, 500, 444, 500, 1000,
          333, 333),
    "b": (333, 500, 500, 500, 1000, 833, 333, 333, 333, 500, 570, 250, 333, 250, 278, 500, 500,
          500, 500, 500, 500, 500, 500, 500, 500, 333, 333, 333, 570, 500, 500, 930,
          722, 667, 722, 722, 667, 611, 778, 778, 389, 500, 778, 667, 944, 722, 778,
          611, 778, 722, 556, 667, 722, 722, 1000, 722, 722, 667, 333, 500, 333, 333,
          333, 333, 500, 556, 444, 556, 444, 333, 500, 556, 278, 333, 556, 278, 833,
          556, 500, 556, 556, 444, 389, 333, 556, 500, 722, 500, 500, 444, 500, 1000,
          333, 333),
    "i": (333, 556, 500, 500, 833, 778, 333, 333, 333, 500, 675, 250, 333, 250, 278, 500, 500,
          500, 500, 500, 500, 500, 500, 500, 500, 333, 333, 389, 675, 500, 500, 920,
          611, 611, 667, 722, 611, 611, 722, 722, 333, 444, 667, 556, 833, 667, 722,
          611, 722, 611, 500, 556, 722, 611, 833, 611, 556, 556, 389, 556, 389, 333,
          333, 333, 500, 500, 444, 500, 444, 278, 500, 500, 278, 278, 444, 278, 722,
          500, 500, 500, 500, 389, 389, 278, 500, 444, 667, 444, 444, 389, 500, 889,
          333, 333),
}
# what the renderer prints for these: ± and − are math symbols ($\pm$, $-$), – is "--",
# † is $^\dagger$ (a superscript), Δ is $\Delta$, ↓ is $\downarrow$; anything else: one em (an upper bound)
_SPECIAL = {" ": 250, "\u2009": 167, "±": 778, "−": 778, "–": 500, "†": 350, "Δ": 833, "×": 778,
            "↓": 500}


def em(text: str, style: str = "r") -> float:
    """Width of ``text`` in em (1000 units) in Times ``style`` ('r', 'b' or 'i')."""
    w = _W[style]
    total = 0
    for ch in text:
        o = ord(ch)
        total += w[o - 33] if 33 <= o <= 126 else _SPECIAL.get(ch, 1000)
    return total / 1000.0


Segment = Tuple[str, str, str]  # (text, style 'r'|'b'|'i', size: 'base' or a SIZES key)


def width(segments: Iterable[Segment], base_pt: float) -> float:
    """Width in pt of a cell made of segments; 'base' segments are set at ``base_pt``."""
    return sum(em(text, style) * (base_pt if size == "base" else SIZES[size])
               for text, style, size in segments)
