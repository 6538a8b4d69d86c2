"""``resnet``: a torchvision ResNet, global max or average pooling, a linear
classifier, BCE. ML-GCN's authors attribute most of their gain over a GAP
ResNet-101 to global max pooling, so the pooling is a setting."""
from __future__ import annotations

from typing import Dict, Literal

import torch
import torch.nn as nn
from pydantic import Field

from gmbench.data.base import DataInfo
from gmbench.models.backbone import build_backbone
from gmbench.models.base import Float32Linear, MLICModel
from gmbench.models.trunk import TrunkConfig
from gmbench.registry import register_method


class ResNetConfig(TrunkConfig):
    """The ``model:`` block of ``resnet`` (trunk keys: ``gmbench.models.trunk``)."""
    name: Literal["resnet"] = "resnet"
    pool: Literal["max", "avg"] = "max"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class ResNetClassifier(MLICModel):
    def __init__(self, cfg: ResNetConfig, num_classes: int):
        super().__init__()
        self.backbone, width, self.record = build_backbone(cfg)
        self.record["pool"] = cfg.pool
        self.pool = nn.AdaptiveMaxPool2d(1) if cfg.pool == "max" else nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = Float32Linear(width, num_classes)  # float32 logits under autocast

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """image [B, 3, H, W] → logits [B, C]."""
        feat = self.pool(self.backbone(batch["image"])).flatten(1)
        return {"logits": self.fc(self.drop(feat))}


@register_method("resnet", config=ResNetConfig)
def build(cfg: ResNetConfig, info: DataInfo) -> ResNetClassifier:
    return ResNetClassifier(cfg, info.num_classes)
