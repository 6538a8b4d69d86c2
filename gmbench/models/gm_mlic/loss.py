"""Eq. 15: class-weighted binary cross-entropy on the pooled prediction p_c."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gmbench.models.base import at_least_f32

REDUCTIONS = ("sum_classes", "mean", "sum")


def class_weights(target: torch.Tensor, ratios: torch.Tensor, beta: float) -> torch.Tensor:
    """w_c = y·exp(β(1 − r_c)) + (1 − y)·exp(β·r_c). target [B, C] in {0, 1}; ratios [C]."""
    return target * torch.exp(beta * (1.0 - ratios)) + (1.0 - target) * torch.exp(beta * ratios)


def weighted_bce_from_logits(logits: torch.Tensor, target: torch.Tensor, ratios: torch.Tensor,
                             beta: float, reduction: str = "mean") -> torch.Tensor:
    """−w_c [y log p + (1−y) log(1−p)], p = sigmoid(logits), reduced over non-ignored entries.

    logits [B, C] (the max-pooled matching logit: max and sigmoid commute), target [B, C]
    in {1, 0, -1} (-1 ignored), ratios [C] = r_c. log p via log-sigmoid, so the loss
    stays finite for p within float rounding of 0 or 1.

    reduction: "mean" = sum / (number of non-ignored entries); "sum_classes" = sum over
    classes, mean over the images that have a non-ignored entry (Eq. 15 per image);
    "sum" = plain sum over the batch.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss reduction must be one of {REDUCTIONS}, got {reduction!r}")
    logits = at_least_f32(logits)
    valid = (target >= 0).to(logits.dtype)
    y = target.clamp(min=0).to(logits.dtype)
    w = class_weights(y, ratios.to(logits), beta)
    nll = -(y * F.logsigmoid(logits) + (1.0 - y) * F.logsigmoid(-logits))
    total = (w * nll * valid).sum()
    if reduction == "sum":
        return total
    if reduction == "sum_classes":
        return total / (valid.sum(1) > 0).sum().clamp(min=1).to(logits.dtype)
    return total / valid.sum().clamp(min=1.0)
