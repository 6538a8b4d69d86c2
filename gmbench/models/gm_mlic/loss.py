"""Eq. 15: class-weighted binary cross-entropy on the pooled prediction p_c."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def class_weights(target: torch.Tensor, ratios: torch.Tensor, beta: float) -> torch.Tensor:
    """w_c = y·exp(β(1 − r_c)) + (1 − y)·exp(β·r_c). target [B, C] in {0, 1}; ratios [C]."""
    return target * torch.exp(beta * (1.0 - ratios)) + (1.0 - target) * torch.exp(beta * ratios)


def weighted_bce_from_logits(logits: torch.Tensor, target: torch.Tensor, ratios: torch.Tensor,
                             beta: float) -> torch.Tensor:
    """Mean over non-ignored entries of −w_c [y log p + (1−y) log(1−p)], p = sigmoid(logits).

    logits [B, C] (the max-pooled matching logit: max and sigmoid commute), target [B, C]
    in {1, 0, -1} (-1 ignored), ratios [C] = r_c. log p via log-sigmoid, so the loss
    stays finite for p within float rounding of 0 or 1.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    valid = (target >= 0).to(logits.dtype)
    y = target.clamp(min=0).to(logits.dtype)
    w = class_weights(y, ratios.to(logits), beta)
    nll = -(y * F.logsigmoid(logits) + (1.0 - y) * F.logsigmoid(-logits))
    return (w * nll * valid).sum() / valid.sum().clamp(min=1.0)
