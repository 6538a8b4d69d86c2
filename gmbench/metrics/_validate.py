"""Strict input checks for the metric layer (in the spirit of OGB's Evaluator).

Every public entry point converts its inputs here, so a bad call fails early
with a message that names the argument, the problem and the offending value.
torch is never imported: a tensor is recognised by duck typing.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Tuple

import numpy as np

AP_MODES = ("noninterpolated", "voc_interpolated")
TOPK_MODES = ("threshold", "pure")
DIFFICULT_MODES = ("ignore", "negative")  # target -1: out of the ranking, or a negative


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "numpy")


def to_numpy(x: Any, name: str) -> np.ndarray:
    """numpy array or torch tensor (any device, any float width) → numpy array."""
    if isinstance(x, np.ndarray):
        return x
    if _is_torch_tensor(x):
        t = x.detach().cpu()
        if t.dtype.is_floating_point and t.element_size() < 4:  # fp16 / bf16 have no numpy twin
            t = t.float()
        return t.numpy()
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _first_bad(mask: np.ndarray, values: np.ndarray) -> str:
    """'k of n values ... (first at [i, j]: v)' for an error message."""
    where = np.argwhere(mask)[0]
    pos = ", ".join(str(int(i)) for i in where)
    return (f"{int(mask.sum())} of {mask.size} values (first at [{pos}]: "
            f"{values[tuple(where)]})")


def check_probs(probs: Any, name: str = "probs") -> np.ndarray:
    """Validate probabilities [N, C]; return float32 ones as they are, others as float64."""
    p = to_numpy(probs, name)
    if p.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, C], got shape {tuple(p.shape)}"
                         + ("; use .reshape(-1, 1) for a single class" if p.ndim == 1 else ""))
    if p.shape[0] < 1 or p.shape[1] < 1:
        raise ValueError(f"{name} is empty (shape {tuple(p.shape)}): need N >= 1 samples "
                         "and C >= 1 classes")
    if p.dtype == np.bool_ or not (np.issubdtype(p.dtype, np.floating)
                                   or np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {p.dtype}")
    if p.dtype != np.float32:  # float32 stays: half the memory traffic for the AP pass
        p = np.asarray(p, dtype=np.float64)
    lo, hi = p.min(), p.max()  # NaN makes both comparisons below fail
    if not (lo >= 0.0 and hi <= 1.0):
        bad = ~np.isfinite(p)
        if bad.any():
            raise ValueError(f"{name} must be finite: {_first_bad(bad, p)} are NaN or inf")
        bad = (p < 0.0) | (p > 1.0)
        raise ValueError(f"{name} must lie in [0, 1]: {_first_bad(bad, p)} are outside "
                         "(pass probabilities, not logits: apply a sigmoid first)")
    return p


def check_targets(targets: Any, shape: Tuple[int, ...], name: str = "targets") -> np.ndarray:
    """Validate targets (1 present, 0 absent, -1 ignored) of ``shape``; return int8."""
    t = to_numpy(targets, name)
    if t.shape != shape:
        raise ValueError(f"probs and {name} must have the same shape [N, C], got "
                         f"{shape} and {tuple(t.shape)}")
    if not (t.dtype == np.bool_ or np.issubdtype(t.dtype, np.floating)
            or np.issubdtype(t.dtype, np.integer)):
        raise ValueError(f"{name} must hold -1/0/1 numbers, got dtype {t.dtype}")
    if t.dtype == np.bool_:
        return t.astype(np.int8)
    with np.errstate(invalid="ignore"):
        t8 = t.astype(np.int8)
    ok = (t8 == t) & (t8 >= -1) & (t8 <= 1)
    if not ok.all():
        raise ValueError(f"{name} must contain only 1 (present), 0 (absent) or -1 (ignored): "
                         f"{_first_bad(~ok, t)} are not")
    return t8


def check_pair(probs: Any, targets: Any) -> Tuple[np.ndarray, np.ndarray]:
    """(probs float32 or float64 [N, C], targets int8 [N, C]), validated."""
    if _is_torch_tensor(probs) or isinstance(probs, np.ndarray):
        p_shape = tuple(probs.shape)
        t_shape = tuple(getattr(targets, "shape", ()))
        if len(p_shape) == 2 and len(t_shape) == 2 and p_shape != t_shape:
            raise ValueError(f"probs and targets must have the same shape [N, C], got "
                             f"{p_shape} and {t_shape}")
    p = check_probs(probs)
    return p, check_targets(targets, p.shape)


def check_options(threshold: Any, top_k: Any, ap: Any, topk_mode: Any) -> Tuple[float, int]:
    """Validate the keyword options of ``evaluate``; return (threshold, top_k) normalised."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise ValueError(f"threshold must be a real number in [0, 1], got {threshold!r}")
    thr = float(threshold)
    if not (math.isfinite(thr) and 0.0 <= thr <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if ap not in AP_MODES:
        raise ValueError(f"ap must be one of {AP_MODES}, got {ap!r}")
    if topk_mode not in TOPK_MODES:
        raise ValueError(f"topk_mode must be one of {TOPK_MODES}, got {topk_mode!r}")
    return thr, int(top_k)
