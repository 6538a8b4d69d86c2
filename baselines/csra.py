"""``csra``: class-specific residual attention (Zhu & Wu, ICCV 2021).

    image [B, 3, H, W] → trunk → x [B, D, h, w] → tokens x_j, j = 1..L (L = h·w)
    per head i (temperature T_i), per class c:
        s_cj = m_ic · x_j / ‖m_ic‖                       scores [B, H, C, L]
        base_c = mean_j s_cj                               (average pooling of the scores)
        att_c  = Σ_j softmax_j(T_i · s_cj) · s_cj          (T = ∞: max_j s_cj)
        y_ic   = base_c + λ · att_c
    logits [B, C] = Σ_i y_ic

A 1×1 convolution without bias is a per-location linear classifier, so the scores are
computed as one matmul. Dividing by the classifier norm follows the authors' code; the paper
writes the plain dot product (``normalize: false``).
"""
from __future__ import annotations

import math
from typing import Dict, List, Literal, Optional, Union

import torch
import torch.nn as nn
from pydantic import Field, field_validator, model_validator

from gmbench.data.base import DataInfo
from gmbench.models.backbone import build_backbone
from gmbench.models.base import MLICModel, at_least_f32, no_autocast
from gmbench.models.trunk import TrunkConfig
from gmbench.registry import register_method

# The authors' code: temperatures per number of heads (its 99 stands for ∞).
HEAD_TEMPERATURES = {1: [1.0], 2: [1.0, math.inf], 4: [1.0, 2.0, 4.0, math.inf],
                     6: [1.0, 2.0, 3.0, 4.0, 5.0, math.inf],
                     8: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, math.inf]}

Temperature = Union[Literal["inf"], float]


class CSRAConfig(TrunkConfig):
    """The ``model:`` block of ``csra`` (trunk keys: ``gmbench.models.trunk``)."""
    name: Literal["csra"] = "csra"
    lam: float = Field(0.1, ge=0.0)   # λ: 0.1 VOC 2007 (1 head), 0.5 MS-COCO (4 heads)
    heads: Literal[1, 2, 4, 6, 8] = 1
    # Explicit temperatures, one head each ("inf" or .inf = max pooling); replaces `heads`'
    # table, e.g. [1, 2, 3, 4, inf].
    temperatures: Optional[List[Temperature]] = None
    normalize: bool = True

    @field_validator("temperatures")
    @classmethod
    def _non_negative(cls, v):
        if v is not None:
            if not v:
                raise ValueError("temperatures: give at least one")
            if any(t != "inf" and not t >= 0 for t in v):
                raise ValueError(f"temperatures must be >= 0 or inf, got {v}")
        return v

    @model_validator(mode="after")
    def _heads_agree(self):
        if self.temperatures is not None and "heads" in self.model_fields_set \
                and self.heads != len(self.temperatures):
            raise ValueError(f"heads={self.heads} but {len(self.temperatures)} temperatures; "
                             f"set one of the two")
        return self

    def head_temperatures(self) -> List[float]:
        if self.temperatures is None:
            return list(HEAD_TEMPERATURES[self.heads])
        return [math.inf if t == "inf" else float(t) for t in self.temperatures]


def residual_attention(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Σ_j softmax_j(T·s_j)·s_j over the last dim; T = ∞ → max, T = 0 → mean. [..., L] → [...]."""
    if math.isinf(temperature):
        return scores.amax(dim=-1)
    return (torch.softmax(temperature * scores, dim=-1) * scores).sum(dim=-1)


class CSRAHead(nn.Module):
    """x [B, D, h, w] → logits [B, C], computed in float32 (also under autocast)."""

    def __init__(self, width: int, num_classes: int, temperatures: List[float], lam: float,
                 normalize: bool = True):
        super().__init__()
        self.temperatures, self.lam, self.normalize = list(temperatures), float(lam), normalize
        bound = 1.0 / math.sqrt(width)  # nn.Conv2d's default init for a 1×1 kernel
        self.weight = nn.Parameter(torch.empty(len(temperatures), num_classes, width)
                                   .uniform_(-bound, bound))

    def scores(self, fmap: torch.Tensor) -> torch.Tensor:
        """[B, D, h, w] → s [B, H, C, L]."""
        w = at_least_f32(self.weight)
        if self.normalize:
            w = w / w.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        x = at_least_f32(fmap).flatten(2)                         # [B, D, L]
        h, c, d = w.shape
        return (w.reshape(h * c, d) @ x).unflatten(1, (h, c))     # [B, H·C, L] → [B, H, C, L]

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        with no_autocast(fmap):
            s = self.scores(fmap)
            base = s.mean(dim=-1)                                   # [B, H, C]
            att = torch.stack([residual_attention(s[:, i], t)
                               for i, t in enumerate(self.temperatures)], dim=1)
            return (base + self.lam * att).sum(dim=1)


class CSRA(MLICModel):
    """forward(batch) → {"logits": [B, C]}."""

    def __init__(self, cfg: CSRAConfig, info: DataInfo):
        super().__init__()
        self.backbone, width, record = build_backbone(cfg)
        temps = cfg.head_temperatures()
        self.head = CSRAHead(width, info.num_classes, temps, cfg.lam, cfg.normalize)
        self.record = {**record, "lam": cfg.lam,
                       "temperatures": ["inf" if math.isinf(t) else t for t in temps],
                       "normalize": cfg.normalize}

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {"logits": self.head(self.backbone(batch["image"]))}


@register_method("csra", config=CSRAConfig)
def build(cfg: CSRAConfig, info: DataInfo) -> MLICModel:
    return CSRA(cfg, info)
