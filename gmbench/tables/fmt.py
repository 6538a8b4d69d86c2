"""Number formatting shared by every table format.

Values are fractions in records and percentages (one decimal, as the paper prints them) in
tables; ``epoch_s`` is seconds. A std is printed with one decimal unless that would print a
non-zero spread as "0.0": then with as many decimals as its first significant digit needs
(at most 3; below that "<0.001").
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

UNRANKED = ("chance mAP", "epoch_s")  # not results where higher is better
SECONDS = ("epoch_s",)
MISSING = "–"


def split_col(col: str) -> Tuple[Optional[str], str]:
    """'coco2014/mAP' → ('coco2014', 'mAP'); 'mAP' → (None, 'mAP')."""
    if "/" in col and not col.startswith("AP:"):
        ds, key = col.split("/", 1)
        return ds, key
    return None, col


def is_nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _scale(col: str) -> float:
    return 1.0 if split_col(col)[1] in SECONDS else 100.0


def fmt(x, col: str = "") -> str:
    """A mean (or published value) as printed: '84.3'; missing → '–'."""
    if is_nan(x):
        return MISSING
    return f"{_scale(col) * float(x):.1f}"


def fmt_std(s, col: str = "") -> str:
    """A std as printed: one decimal, more where one decimal would hide a non-zero spread."""
    if s is None:
        return ""
    v = _scale(col) * float(s)
    if v == 0 or round(v, 1) != 0:
        return f"{v:.1f}"
    for digits in (2, 3):
        if round(v, digits) != 0:
            return f"{v:.{digits}f}"
    return "<0.001"


def shown(x, col: str = "") -> Optional[float]:
    """The value as printed, as a number (ranks and deltas compare what the reader sees)."""
    return None if is_nan(x) else float(fmt(x, col))


def delta(mean, published, col: str) -> Optional[float]:
    """Reproduced − published in points, from the values as printed (one decimal)."""
    if published is None or is_nan(mean):
        return None
    return round(shown(mean, col) - shown(published, col), 1) + 0.0


def signed(d: float) -> str:
    """+0.4 / −0.6 (a true minus sign) / 0.0."""
    return "0.0" if d == 0 else (f"+{d:.1f}" if d > 0 else f"−{-d:.1f}")


def ci_text(cell: Optional[dict]) -> str:
    """A significance cell (tables.paired) as 'Δ [low, high]' in points; the reference row:
    'best'; untested: ''."""
    if not cell:
        return ""
    if cell.get("is_ref"):
        return "best"
    lo, hi = (round(100 * x, 1) + 0.0 for x in cell["ci"])
    return f"{signed(round(100 * cell['delta'], 1) + 0.0)} [{signed(lo)}, {signed(hi)}]"
