"""``q2l``: Query2Label (Liu et al., 2021), label queries read the feature map through a
transformer decoder (``torch.nn.TransformerDecoder``).

    image [B, 3, H, W] → trunk → f [B, D, h, w]
    1×1 projection D → d (identity when d = D, the authors' default) → tokens [B, L, d]
    + 2-D sine positions [L, d] → encoder (``encoder_layers``, may be 0) → memory [B, L, d]
    learned label queries [C, d] → decoder (``decoder_layers``) over memory → [B, C, d]
    per-class linear (one weight vector and bias per class) → logits [B, C]

d = ``hidden_dim`` (None: the trunk's width, 2048 for ResNet-101), ``heads`` attention heads,
feed-forward width ``ffn_dim`` (None: 4·d, the authors' 8192 at d = 2048). Choices where
torch's layers differ from the authors' DETR-style code: docs/methods.md.
"""
from __future__ import annotations

import contextlib
import math
from typing import Dict, List, Literal, Optional

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field

from gmbench.data.base import DataInfo
from gmbench.models.backbone import BackboneName, build_backbone
from gmbench.models.base import MLICModel, PerClassLinear, at_least_f32
from gmbench.registry import register_method


class Q2LConfig(BaseModel):
    """The ``model:`` block of ``q2l``."""
    model_config = ConfigDict(extra="forbid")

    name: Literal["q2l"] = "q2l"
    depth: Literal[18, 34, 50, 101, 152] = 101
    backbone: BackboneName = None  # timm/<name> replaces the ResNet of `depth`
    pretrained: str = "none"
    hidden_dim: Optional[int] = Field(None, ge=2)   # None: the trunk's width, no projection
    heads: int = Field(4, ge=1)
    encoder_layers: int = Field(1, ge=0)
    decoder_layers: int = Field(2, ge=1)
    ffn_dim: Optional[int] = Field(None, ge=1)      # None: 4 · hidden_dim
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # False: the queries skip self-attention (the authors' code default); True: torch's
    # full decoder layer, self-attention among the label queries first (the paper's text).
    self_attention: bool = False


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


class _NoSelfAttention(nn.Module):
    """Stands in for ``self_attn``: nn.TransformerDecoder reads ``self_attn.batch_first``."""
    batch_first = True


class QueryDecoderLayer(nn.TransformerDecoderLayer):
    """torch's post-norm decoder layer (batch first) that can skip self-attention among the
    queries and keep its cross-attention weights.

    With ``self_attention=False`` the first sub-block is x ← LayerNorm(x), so no weights sit
    unused. With ``keep_attention = True`` each forward stores ``attention`` [B, Q, L]: the
    cross-attention of each query over the memory tokens, averaged over heads.
    """

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float,
                 self_attention: bool = True):
        super().__init__(d_model, heads, ffn_dim, dropout, batch_first=True)
        self.self_attention = self_attention
        if not self_attention:
            self.self_attn = _NoSelfAttention()
        self.keep_attention = False
        self.attention: Optional[torch.Tensor] = None

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal=False):
        if not self.self_attention:
            return torch.zeros_like(x)
        return super()._sa_block(x, attn_mask, key_padding_mask, is_causal)

    def _mha_block(self, x, mem, attn_mask, key_padding_mask, is_causal=False):
        out, weights = self.multihead_attn(x, mem, mem, attn_mask=attn_mask,
                                           key_padding_mask=key_padding_mask, is_causal=is_causal,
                                           need_weights=self.keep_attention)
        if self.keep_attention:
            self.attention = weights
        return self.dropout2(out)


def cpu_autocast_off(x: torch.Tensor):
    """Autocast off, on CPU only, for the transformer layers: torch 2.2's fused inference
    paths (encoder layer, self-attention) ignore CPU autocast and would meet bfloat16 tokens
    with float32 weights. CUDA autocast skips those paths and keeps bfloat16 matmuls."""
    if x.device.type == "cpu" and torch.is_autocast_cpu_enabled():
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()


def decoder_attention(model: nn.Module, batch: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
    """Run ``model`` on ``batch`` keeping every decoder layer's cross-attention
    [B, Q, L] (Q queries over L tokens); for maps and tests, not for training."""
    layers = [m for m in model.modules() if isinstance(m, QueryDecoderLayer)]
    for layer in layers:
        layer.keep_attention = True
    try:
        model(batch)
        return [layer.attention for layer in layers]
    finally:
        for layer in layers:
            layer.keep_attention, layer.attention = False, None


class Query2Label(MLICModel):
    """forward(batch) → {"logits": [B, C]}; ``decoder_attention(model, batch)`` gives the maps."""

    def __init__(self, cfg: Q2LConfig, info: DataInfo):
        super().__init__()
        self.backbone, width, record = build_backbone(cfg)
        d = cfg.hidden_dim or width
        if d % cfg.heads or d % 2:
            raise ValueError(f"q2l: hidden_dim {d} must be even and divisible by heads={cfg.heads}")
        ffn = cfg.ffn_dim or 4 * d
        self.proj = nn.Identity() if d == width else nn.Conv2d(width, d, kernel_size=1)
        if cfg.encoder_layers:
            enc = nn.TransformerEncoderLayer(d, cfg.heads, ffn, cfg.dropout, batch_first=True)
            self.encoder = nn.TransformerEncoder(enc, cfg.encoder_layers, enable_nested_tensor=False)
        else:
            self.encoder = nn.Identity()
        layer = QueryDecoderLayer(d, cfg.heads, ffn, cfg.dropout, cfg.self_attention)
        self.decoder = nn.TransformerDecoder(layer, cfg.decoder_layers, norm=nn.LayerNorm(d))
        self.queries = nn.Parameter(torch.randn(info.num_classes, d))  # nn.Embedding's init
        self.classifier = PerClassLinear(info.num_classes, d)
        self.record = {**record, "hidden_dim": d, "heads": cfg.heads, "ffn_dim": ffn,
                       "encoder_layers": cfg.encoder_layers, "decoder_layers": cfg.decoder_layers,
                       "self_attention": cfg.self_attention}

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        f = self.proj(self.backbone(batch["image"]))                  # [B, d, h, w]
        b, d, h, w = f.shape
        tokens = at_least_f32(f).flatten(2).transpose(1, 2) + sine_positions(h, w, d).to(f.device)
        with cpu_autocast_off(f):
            memory = self.encoder(tokens)                                  # [B, L, d]
            labels = self.decoder(self.queries.expand(b, -1, -1), memory)  # [B, C, d]
        return {"logits": self.classifier(labels)}


@register_method("q2l", config=Q2LConfig)
def build(cfg: Q2LConfig, info: DataInfo) -> MLICModel:
    return Query2Label(cfg, info)
