"""Example method for docs/adding_a_method.md: mean-pooled ResNet feature and a
linear classifier whose bias starts at the training label prior.

    image [B, 3, H, W] → trunk → [B, D, h, w] → mean over (h, w) → [B, D]
    → Linear(D, C), bias₀ = logit(r_c) with r_c from DataInfo.label_ratios → logits [B, C]

Starting at the prior makes the first loss the entropy of the label frequencies
instead of log 2 per class; the rest is a plain GAP baseline.
"""
from __future__ import annotations

from typing import Dict, Literal

import numpy as np
import torch

from gmbench.data.base import DataInfo
from gmbench.models.backbone import build_backbone
from gmbench.models.base import Float32Linear, MLICModel
from gmbench.models.trunk import Depth, TrunkConfig
from gmbench.registry import register_method


class ExampleMeanPoolConfig(TrunkConfig):
    """The ``model:`` block of ``example_mean_pool``: the trunk keys of every method with a
    trunk (depth, backbone, pretrained; ``gmbench.models.trunk``) plus its own."""
    name: Literal["example_mean_pool"] = "example_mean_pool"
    depth: Depth = 18
    prior_bias: bool = True


class ExampleMeanPool(MLICModel):
    """forward(batch) → {"logits": [B, C]}."""

    def __init__(self, cfg: ExampleMeanPoolConfig, info: DataInfo):
        super().__init__()
        self.backbone, width, record = build_backbone(cfg)
        self.fc = Float32Linear(width, info.num_classes)  # float32 logits under autocast
        if cfg.prior_bias:
            # Clip so that classes absent from (or present in every) training image stay finite.
            r = np.clip(np.asarray(info.label_ratios, dtype=np.float64), 1e-4, 1 - 1e-4)
            with torch.no_grad():
                self.fc.bias.copy_(torch.from_numpy(np.log(r / (1 - r))))
        self.record = {**record, "prior_bias": cfg.prior_bias}

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {"logits": self.fc(self.backbone(batch["image"]).mean(dim=(2, 3)))}


@register_method("example_mean_pool", config=ExampleMeanPoolConfig)
def build(cfg: ExampleMeanPoolConfig, info: DataInfo) -> MLICModel:
    return ExampleMeanPool(cfg, info)
