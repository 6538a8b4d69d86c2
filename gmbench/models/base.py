"""The contract every method's model satisfies, so that one engine trains all.

    out   = model(batch)            # dict of tensors
    loss  = model.loss(out, batch)  # scalar
    probs = model.probs(out)        # [B, C] in [0, 1]

``batch`` is a dict from ``gmbench.data.collate``:
    image:  float [B, 3, H, W]
    target: float [B, C] with 1 / 0 / -1 (-1 = ignored in the loss)
    index:  long [B], row of the image in its LabelSet
    boxes:  float [B, M, 4] normalised (x1, y1, x2, y2)   (instance methods only)
    box_mask: bool [B, M]                                  (instance methods only)
    inst_feat: float [B, M, D]                             (cached instance features only)
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F


def at_least_f32(x: torch.Tensor) -> torch.Tensor:
    """Upcast float16/bfloat16 (autocast output) to float32; float32/float64 pass unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def no_autocast(x: torch.Tensor):
    """Context that switches autocast off on ``x``'s device type (for float32 head layers)."""
    return torch.autocast(x.device.type, enabled=False)


def float32_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with autocast off and both sides at least float32.

    For a head's last layer: bfloat16 logits keep 8 bits of mantissa, so many test scores
    tie and tied scores lower AP (docs/protocol.md, "Tied scores from bfloat16").
    """
    with no_autocast(a):
        return torch.matmul(at_least_f32(a), at_least_f32(b))


class Float32Linear(nn.Linear):
    """nn.Linear that always computes in (at least) float32, also under autocast.

    Same parameters and state_dict keys as nn.Linear; use it as the last layer of a head
    so that the logits the metric layer ranks are not rounded to bfloat16/float16.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with no_autocast(x):
            w = at_least_f32(self.weight)
            b = None if self.bias is None else at_least_f32(self.bias)
            x = at_least_f32(x)
            return F.linear(x, w.to(x.dtype), None if b is None else b.to(x.dtype))


class PerClassLinear(nn.Module):
    """One weight vector and bias per class, in (at least) float32 like ``Float32Linear``:
    h [B, C, d] → logits [B, C], logit_c = w_c · h_c + b_c (heads with a vector per class).
    Init as nn.Linear(d, 1) would give each class: U(±1/√d)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        bound = 1.0 / dim ** 0.5
        self.weight = nn.Parameter(torch.empty(num_classes, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        with no_autocast(h):
            return (at_least_f32(h) * at_least_f32(self.weight)).sum(-1) + at_least_f32(self.bias)


def masked_bce_with_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE over entries whose target is not -1. [B, C] → scalar."""
    mask = (target >= 0).to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target.clamp(min=0).to(logits.dtype),
                                              reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


class MLICModel(nn.Module):
    """Base class: logits → sigmoid probabilities, masked BCE loss.

    Subclasses implement ``forward(batch) -> {"logits": [B, C], ...}`` and set
    ``self.backbone`` (if any) so that the backbone learning-rate multiplier applies.
    Set ``needs_boxes = True`` to receive instance boxes in the batch.
    """
    needs_boxes: bool = False
    needs_instance_features: bool = False
    needs_images: bool = True       # False: the dataset need not decode images (cached features)
    # registered name (gmbench.recipes.losses) of what ``loss`` computes; ``loss.name: default`` runs it
    default_loss: str = "bce"

    def loss(self, out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return masked_bce_with_logits(at_least_f32(out["logits"]), batch["target"])

    def probs(self, out: Dict[str, torch.Tensor]) -> torch.Tensor:
        """sigmoid(logits) in float32 (float64 stays float64), outside any autocast."""
        logits = at_least_f32(out["logits"])
        with no_autocast(logits):
            return torch.sigmoid(logits)

    def param_groups(self, lr: float, backbone_lr_mult: float) -> List[dict]:
        """Backbone parameters at lr·mult, the rest at lr."""
        backbone = getattr(self, "backbone", None)
        bb_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
        bb = [p for p in self.parameters() if id(p) in bb_ids and p.requires_grad]
        rest = [p for p in self.parameters() if id(p) not in bb_ids and p.requires_grad]
        groups = []
        if bb:
            groups.append({"params": bb, "lr": lr * backbone_lr_mult, "name": "backbone"})
        if rest:
            groups.append({"params": rest, "lr": lr, "name": "head"})
        return groups

    def describe(self) -> Dict[str, object]:
        """Facts about this instance that belong in the run record (e.g. weights source)."""
        return dict(getattr(self, "record", {}))
