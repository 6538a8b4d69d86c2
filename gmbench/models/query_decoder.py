"""Label-query attention layers shared by Query2Label and ML-Decoder.

Every layer here is post-norm and ends with the same block (``AttentionFFN``):

    t ← LayerNorm₂(t + Dropout(MHA(query, key, value)))
    t ← LayerNorm₃(t + Dropout(W₂ Dropout(ReLU(W₁ t))))

What differs is what goes into the attention:

  * ``DETRDecoderLayer`` (Query2Label's authors, built on DETR): the decoder state t starts at
    0; the label embedding q is added to the attention *queries* of every layer, the 2-D sine
    positions p to the *keys* only: MHA(t + q, memory + p, memory). By default there is no
    self-attention sub-block and no LayerNorm₁ (the authors remove both); with
    ``self_attention=True`` DETR's t ← LayerNorm₁(t + Dropout(MHA(t + q, t + q, t))) comes first.
  * ``DETREncoderLayer``: DETR's encoder, MHA(s + p, s + p, s) over the tokens s (positions
    on queries and keys, never on values).
  * ``MLDecoderLayer`` (ML-Decoder's authors): the queries are the decoder's input t, the
    self-attention slot is t ← LayerNorm₁(t + Dropout(t)), then MHA(t, memory, memory), with
    no positions.

Shapes: t / queries [B, Q, d], memory / tokens / positions [B, L, d] (positions may be
[L, d]). ``decoder_attention`` reads each decoder layer's cross-attention [B, Q, L].
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class AttentionFFN(nn.Module):
    """Multi-head attention then a ReLU feed-forward, each with residual, dropout and a
    post-LayerNorm. With ``keep_attention = True`` each forward stores ``attention``
    [B, Q, L], the attention weights averaged over heads."""
    is_decoder = False  # True: queries over memory tokens (what ``decoder_attention`` reads)

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout,
                                                    batch_first=True)
        self.dropout2, self.norm2 = nn.Dropout(dropout), nn.LayerNorm(d_model)
        self.linear1, self.linear2 = nn.Linear(d_model, ffn_dim), nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout3, self.norm3 = nn.Dropout(dropout), nn.LayerNorm(d_model)
        self.keep_attention = False
        self.attention: Optional[torch.Tensor] = None

    def attend_and_feed(self, t: torch.Tensor, query: torch.Tensor, key: torch.Tensor,
                        value: torch.Tensor) -> torch.Tensor:
        """t, query [B, Q, d]; key, value [B, L, d] → [B, Q, d]."""
        out, weights = self.multihead_attn(query, key, value, need_weights=self.keep_attention)
        if self.keep_attention:
            self.attention = weights
        t = self.norm2(t + self.dropout2(out))
        return self.norm3(t + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(t))))))


def _with(x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    return x if pos is None else x + pos


class DETRDecoderLayer(AttentionFFN):
    """Query2Label's decoder layer: forward(t, memory, pos, query_pos) → t [B, Q, d]."""
    is_decoder = True

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float,
                 self_attention: bool = False):
        super().__init__(d_model, heads, ffn_dim, dropout)
        if self_attention:
            self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
            self.dropout1, self.norm1 = nn.Dropout(dropout), nn.LayerNorm(d_model)
        else:
            self.self_attn = None

    def forward(self, t: torch.Tensor, memory: torch.Tensor, pos: Optional[torch.Tensor] = None,
                query_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.self_attn is not None:
            q = _with(t, query_pos)
            t = self.norm1(t + self.dropout1(self.self_attn(q, q, t, need_weights=False)[0]))
        return self.attend_and_feed(t, _with(t, query_pos), _with(memory, pos), memory)


class DETREncoderLayer(AttentionFFN):
    """DETR's encoder layer: forward(src [B, L, d], pos) → [B, L, d]; ``multihead_attn`` is
    the self-attention among the tokens here."""

    def forward(self, src: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        q = _with(src, pos)
        return self.attend_and_feed(src, q, q, src)


class MLDecoderLayer(AttentionFFN):
    """ML-Decoder's layer: forward(queries [B, Q, d], memory [B, L, d]) → [B, Q, d]."""
    is_decoder = True

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__(d_model, heads, ffn_dim, dropout)
        self.dropout1, self.norm1 = nn.Dropout(dropout), nn.LayerNorm(d_model)

    def forward(self, t: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        # The authors' stand-in for the removed self-attention: LayerNorm(t + Dropout(t)).
        t = self.norm1(t + self.dropout1(t))
        return self.attend_and_feed(t, t, memory, memory)


class LayerStack(nn.Module):
    """``num_layers`` layers from ``make_layer`` applied in turn, then ``norm`` (if any):
    forward(x, *context, **kw) → x, each layer called as layer(x, *context, **kw)."""

    def __init__(self, make_layer: Callable[[], nn.Module], num_layers: int,
                 norm: Optional[nn.Module] = None):
        super().__init__()
        self.layers = nn.ModuleList(make_layer() for _ in range(num_layers))
        self.norm = norm

    def forward(self, x: torch.Tensor, *context, **kw) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, *context, **kw)
        return x if self.norm is None else self.norm(x)


def xavier_init(module: nn.Module) -> nn.Module:
    """Xavier-uniform init of every weight matrix of ``module`` (biases and LayerNorms keep
    theirs), as DETR and Query2Label initialise their transformer."""
    for prm in module.parameters():
        if prm.dim() > 1:
            nn.init.xavier_uniform_(prm)
    return module


def decoder_attention(model: nn.Module, batch: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
    """Run ``model`` on ``batch`` keeping every decoder layer's cross-attention [B, Q, L]
    (Q queries over L tokens); for maps and tests, not for training."""
    layers = [m for m in model.modules() if isinstance(m, AttentionFFN) and m.is_decoder]
    for layer in layers:
        layer.keep_attention = True
    try:
        model(batch)
        return [layer.attention for layer in layers]
    finally:
        for layer in layers:
            layer.keep_attention, layer.attention = False, None
