"""Eq. 15: class-weighted binary cross-entropy on the pooled prediction p_c, and its
registration as the named loss ``weighted_bce`` (``loss.name: weighted_bce``, with its
setting ``loss.beta``). GM-MLIC's own loss (``loss.name: default``) is the same function
with ``model.loss_reduction``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from gmbench.models.base import at_least_f32
from gmbench.registry import register_loss

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


class WeightedBCESettings(BaseModel):
    beta: Optional[float] = Field(None, ge=0)  # β of Eq. 15 (None: the model's model.beta, else 0.4)


@register_loss("weighted_bce", settings=WeightedBCESettings)
def build_weighted_bce(cfg, model):
    """Eq. 15 as a named loss for any model that keeps the training label ratios r_c as
    ``model.ratios`` [C] (GM-MLIC does); β from ``loss.beta``, else the model's ``cfg.beta``."""
    ratios = getattr(model, "ratios", None)
    if ratios is None:
        raise ValueError(f"loss.name=weighted_bce needs the training label ratios, which "
                         f"{type(model).__name__} does not keep (model.ratios); use bce, asl or focal")
    beta = cfg.beta if cfg.beta is not None else getattr(getattr(model, "cfg", None), "beta", 0.4)
    return lambda x, t: weighted_bce_from_logits(x, t, ratios, beta)
