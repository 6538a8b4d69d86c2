"""``ml_decoder``: ML-Decoder (Ridnik et al., WACV 2023), cross-attention only from K queries
to the spatial tokens, then group decoding.

    image [B, 3, H, W] → trunk → f [B, D, h, w] → tokens [B, L, D]
    ReLU(Linear(D → d)) → memory [B, L, d]
    K queries [K, d] → decoder layers (``gmbench.models.query_decoder.MLDecoderLayer``):
        t ← LN(t + Dropout(t)) in the self-attention's place, t ← LN(t + MHA(t, memory, memory)),
        then the feed-forward block; t starts as the queries → [B, K, d]
    group fully connected: query k owns classes k·g … k·g + g − 1, g = ⌈C / K⌉,
        logit_{k·g + j} = h_k · W[k, :, j] + b_{k·g + j}   → [B, K·g] → first C → logits [B, C]

K = ``num_queries`` (None: min(100, C), the authors' default, so MS-COCO's 80 classes get
one query each) or K = ⌈C / ``group_factor``⌉. With K = C (g = 1) group decoding is the
per-class readout of Query2Label. Queries are fixed random vectors by default, as in the
authors' code (``learn_queries: true`` trains them).
"""
from __future__ import annotations

import math
from typing import Dict, Literal, Optional

import torch
import torch.nn as nn
from pydantic import Field, model_validator

from gmbench.data.base import DataInfo
from gmbench.models.backbone import build_backbone
from gmbench.models.base import MLICModel, at_least_f32, no_autocast
from gmbench.models.query_decoder import LayerStack, MLDecoderLayer
from gmbench.models.trunk import TrunkConfig
from gmbench.registry import register_method


class MLDecoderConfig(TrunkConfig):
    """The ``model:`` block of ``ml_decoder`` (trunk keys: ``gmbench.models.trunk``)."""
    name: Literal["ml_decoder"] = "ml_decoder"
    num_queries: Optional[int] = Field(None, ge=1)   # K; None: min(100, C) unless group_factor
    group_factor: Optional[int] = Field(None, ge=1)  # g; K = ⌈C / g⌉
    embed_dim: int = Field(768, ge=1)                # d
    heads: int = Field(8, ge=1)
    layers: int = Field(1, ge=1)
    ffn_dim: int = Field(2048, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    learn_queries: bool = False

    @model_validator(mode="after")
    def _one_of(self):
        if self.num_queries is not None and self.group_factor is not None:
            raise ValueError("set model.num_queries or model.group_factor, not both")
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by heads={self.heads}")
        return self

    def queries_for(self, num_classes: int) -> int:
        if self.group_factor is not None:
            return math.ceil(num_classes / self.group_factor)
        return min(self.num_queries or 100, num_classes)


class GroupFC(nn.Module):
    """Group fully connected: h [B, K, d] → logits [B, C], float32 also under autocast.

    W [K, d, g], g = ⌈C / K⌉; class k·g + j reads query k through W[k, :, j]; the K·g − C
    outputs past the last class are dropped. Xavier-normal W and zero bias, as the authors'.
    """

    def __init__(self, num_queries: int, dim: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.group = math.ceil(num_classes / num_queries)
        self.weight = nn.Parameter(torch.empty(num_queries, dim, self.group))
        nn.init.xavier_normal_(self.weight)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        with no_autocast(h):
            out = torch.einsum("bkd,kdg->bkg", at_least_f32(h), at_least_f32(self.weight))
            return out.flatten(1)[:, :self.num_classes] + at_least_f32(self.bias)


class MLDecoder(MLICModel):
    """forward(batch) → {"logits": [B, C]}; ``gmbench.models.query_decoder.decoder_attention``
    gives the cross-attention [B, K, L] of each layer."""

    def __init__(self, cfg: MLDecoderConfig, info: DataInfo):
        super().__init__()
        self.backbone, width, record = build_backbone(cfg)
        c, k, d = info.num_classes, cfg.queries_for(info.num_classes), cfg.embed_dim
        self.embed = nn.Linear(width, d)
        self.queries = nn.Parameter(torch.randn(k, d), requires_grad=cfg.learn_queries)
        self.decoder = LayerStack(lambda: MLDecoderLayer(d, cfg.heads, cfg.ffn_dim, cfg.dropout),
                                  cfg.layers)
        self.group_fc = GroupFC(k, d, c)
        self.record = {**record, "num_queries": k, "group_factor": self.group_fc.group,
                       "embed_dim": d, "learn_queries": cfg.learn_queries}

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        f = self.backbone(batch["image"])                                      # [B, D, h, w]
        # The whole head in float32, ~0.9 G multiply-adds per image at 448 px (3 % of a
        # ResNet-101 trunk): with bfloat16 attention outputs, the small image-to-image
        # differences of a fresh head round away and scores tie (test_float32_scores.py).
        with no_autocast(f):
            memory = torch.relu(self.embed(at_least_f32(f).flatten(2).transpose(1, 2)))  # [B, L, d]
            h = self.decoder(self.queries.expand(f.shape[0], -1, -1), memory)   # [B, K, d]
            return {"logits": self.group_fc(h)}


@register_method("ml_decoder", config=MLDecoderConfig)
def build(cfg: MLDecoderConfig, info: DataInfo) -> MLICModel:
    return MLDecoder(cfg, info)
