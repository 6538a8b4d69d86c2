"""``q2l``: Query2Label (Liu et al., 2021) as its authors built it on DETR: label queries
read the feature map through a transformer decoder.

    image [B, 3, H, W] → trunk (FrozenBatchNorm, stem + layer1 frozen) → f [B, D, h, w]
    1×1 projection D → d (identity when d = D, the authors' default) → tokens s [B, L, d]
    2-D sine positions p [L, d]; encoder (``encoder_layers``, may be 0):
        s ← LN(s + MHA(s + p, s + p, s)), then the feed-forward block → memory [B, L, d]
    label embeddings q [C, d]; decoder state t = 0 [B, C, d]; per layer
        t ← LN(t + MHA(t + q, memory + p, memory)), then the feed-forward block
    final LayerNorm → [B, C, d] → per-class linear (one vector and bias per class) → logits [B, C]

Positions reach queries and keys only, never values; the label embedding is re-added to the
queries in every layer. The decoder has no self-attention and no LayerNorm₁ unless
``self_attention: true`` (the paper's text). Transformer weight matrices are xavier-uniform.
d = ``hidden_dim`` (None: the trunk's width, 2048 for ResNet-101), ``heads`` attention heads,
feed-forward width ``ffn_dim`` (None: 4·d; the authors' COCO command uses 8192 at d = 2048).
The layers: ``gmbench.models.query_decoder``; the trunk's freezing: ``gmbench.models.trunk``;
what still differs from the authors' code: docs/methods.md.
"""
from __future__ import annotations

import math
from typing import Dict, Literal, Optional

import torch
import torch.nn as nn
from pydantic import Field, model_validator

from gmbench.data.base import DataInfo
from gmbench.models.base import MLICModel, PerClassLinear, at_least_f32
from gmbench.models.query_decoder import (DETRDecoderLayer, DETREncoderLayer, LayerStack,
                                          decoder_attention, xavier_init)
from gmbench.models.trunk import FreezeStages, FrozenBNTrunkConfig, FrozenStagesMixin, build_trunk
from gmbench.registry import register_method

__all__ = ["Q2LConfig", "Query2Label", "decoder_attention", "sine_positions"]


class Q2LConfig(FrozenBNTrunkConfig):
    """The ``model:`` block of ``q2l`` (trunk keys: ``gmbench.models.trunk``)."""
    name: Literal["q2l"] = "q2l"
    # The authors' trunk: FrozenBatchNorm2d throughout, stem + layer1 without gradient.
    frozen_bn: bool = True
    freeze_backbone: FreezeStages = "below_layer2"
    hidden_dim: Optional[int] = Field(None, ge=2)   # None: the trunk's width, no projection
    heads: int = Field(4, ge=1)
    encoder_layers: int = Field(1, ge=0)
    decoder_layers: int = Field(2, ge=1)
    ffn_dim: Optional[int] = Field(None, ge=1)      # None: 4 · hidden_dim
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # False: the queries skip self-attention (the authors' code default); True: DETR's full
    # decoder layer, self-attention among the label queries first (the paper's text).
    self_attention: bool = False

    @model_validator(mode="before")
    @classmethod
    def _trunk_defaults(cls, data):
        # The defaults above are the authors' pretrained torchvision ResNet. They are off
        # (unless set) for a timm trunk: the authors' TResNet trains its own BatchNorm, and
        # freeze_backbone names ResNet stages. And for a random-init trunk: frozen BatchNorm
        # statistics would then be the identity (mean 0, variance 1) and the frozen stem
        # random, so it would train without normalisation (the demo's ResNet-18 stops learning).
        if isinstance(data, dict) and (data.get("backbone")
                                       or data.get("pretrained", "none") == "none"):
            data = {"frozen_bn": False, "freeze_backbone": "none", **data}
        return data


def sine_positions(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """2-D sine/cosine positions of an h×w grid, row-major like ``flatten(2)``: [h·w, dim].

    First dim/2 channels encode the row, the rest the column; coordinates are scaled to
    (0, 2π] so the code does not depend on the grid size; channel k uses frequency
    temperature^(2⌊k/2⌋ / (dim/2)), sine on even k and cosine on odd k.
    """
    if dim % 2:
        raise ValueError(f"sine positions need an even width, got {dim}")
    n = dim // 2
    freq = temperature ** (2 * (torch.arange(n) // 2) / n)

    def axis(size: int) -> torch.Tensor:
        a = torch.arange(1, size + 1, dtype=torch.float32) / size * 2 * math.pi
        ang = a[:, None] / freq                                  # [size, n]
        return torch.where(torch.arange(n) % 2 == 0, ang.sin(), ang.cos())

    ys, xs = axis(h), axis(w)
    return torch.cat([ys[:, None, :].expand(h, w, n), xs[None, :, :].expand(h, w, n)],
                     dim=-1).reshape(h * w, dim)


class Query2Label(FrozenStagesMixin, MLICModel):
    """forward(batch) → {"logits": [B, C]}; ``decoder_attention(model, batch)`` gives the maps."""

    def __init__(self, cfg: Q2LConfig, info: DataInfo):
        super().__init__()
        self.backbone, width, self.n_frozen, record = build_trunk(cfg)
        d = cfg.hidden_dim or width
        if d % cfg.heads or d % 2:
            raise ValueError(f"q2l: hidden_dim {d} must be even and divisible by heads={cfg.heads}")
        ffn = cfg.ffn_dim or 4 * d
        self.proj = nn.Identity() if d == width else nn.Conv2d(width, d, kernel_size=1)
        self.encoder = LayerStack(lambda: DETREncoderLayer(d, cfg.heads, ffn, cfg.dropout),
                                  cfg.encoder_layers)
        self.decoder = LayerStack(lambda: DETRDecoderLayer(d, cfg.heads, ffn, cfg.dropout,
                                                           cfg.self_attention),
                                  cfg.decoder_layers, norm=nn.LayerNorm(d))
        xavier_init(self.encoder)
        xavier_init(self.decoder)
        self.queries = nn.Parameter(torch.randn(info.num_classes, d))  # nn.Embedding's init
        self.classifier = PerClassLinear(info.num_classes, d)
        self.record = {**record, "hidden_dim": d, "heads": cfg.heads, "ffn_dim": ffn,
                       "encoder_layers": cfg.encoder_layers, "decoder_layers": cfg.decoder_layers,
                       "self_attention": cfg.self_attention}

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        f = self.proj(self.run_trunk(batch["image"]))                    # [B, d, h, w]
        b, d, h, w = f.shape
        tokens = at_least_f32(f).flatten(2).transpose(1, 2)               # [B, L, d]
        pos = sine_positions(h, w, d).to(tokens)                          # [L, d]
        memory = self.encoder(tokens, pos=pos)                            # [B, L, d]
        query_pos = self.queries.expand(b, -1, -1)                        # [B, C, d]
        labels = self.decoder(torch.zeros_like(query_pos), memory, pos=pos,
                              query_pos=query_pos)                        # [B, C, d]
        return {"logits": self.classifier(labels)}


@register_method("q2l", config=Q2LConfig)
def build(cfg: Q2LConfig, info: DataInfo) -> MLICModel:
    return Query2Label(cfg, info)
