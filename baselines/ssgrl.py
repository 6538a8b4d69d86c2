"""SSGRL-style model (Chen et al., ICCV 2019): class-specific attention over the
backbone map guided by label word embeddings (semantic decoupling), then a gated
graph network over the classes (semantic interaction).

    image [B, 3, H, W] → trunk → f [B, D, h, w]
    semantic decoupling (f, embeddings [C, E]) → h0 [B, C, D], attention [B, C, h·w]
    gated graph, T steps over P and Pᵀ → hT [B, C, D]
    tanh(Linear(concat(hT, h0))) [B, C, O] → per-class linear → logits [B, C]

D is the trunk's width; O defaults to D (the paper's 2048 with ResNet-101).
"""
from __future__ import annotations

import math
from typing import Dict, Literal, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from pydantic import Field

from gmbench.data.base import DataInfo
from gmbench.models.base import MLICModel, at_least_f32, no_autocast
from gmbench.models.label_graph import check_side_info, conditional_probability
from gmbench.models.trunk import FreezableTrunkConfig, FrozenStagesMixin, build_trunk
from gmbench.registry import register_method


class SSGRLConfig(FreezableTrunkConfig):
    """The ``model:`` block of ``ssgrl`` (trunk keys: ``gmbench.models.trunk``; the
    reference code trains only layer4 of the trunk: ``freeze_backbone: below_layer4``)."""
    name: Literal["ssgrl"] = "ssgrl"
    attention_dim: int = Field(1024, ge=1)
    # None → the trunk's width.
    output_dim: Optional[int] = Field(None, ge=1)
    time_steps: int = Field(3, ge=0)


class SemanticDecoupling(nn.Module):
    """Word-embedding-guided attention over locations, one distribution per class."""

    def __init__(self, feat_dim: int, word_dim: int, attention_dim: int):
        super().__init__()
        self.proj_feat = nn.Linear(feat_dim, attention_dim, bias=False)
        self.proj_word = nn.Linear(word_dim, attention_dim, bias=False)
        self.hidden = nn.Linear(attention_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def forward(self, fmap: torch.Tensor, words: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """fmap [B, D, h, w], words [C, E] → (features [B, C, D], attention [B, C, h·w])."""
        f = fmap.flatten(2).transpose(1, 2)                    # [B, L, D]
        joint = torch.tanh(self.proj_feat(f).unsqueeze(2)      # [B, L, 1, K]
                           * self.proj_word(words))            # × [C, K] → [B, L, C, K]
        scores = self.score(self.hidden(joint)).squeeze(-1)    # [B, L, C]
        attn = torch.softmax(scores, dim=1).transpose(1, 2)    # over locations → [B, C, L]
        return attn @ f, attn


class GatedGraph(nn.Module):
    """GRU-style propagation over a fixed class graph A [C, C].

    Node c receives a_c = [Σ_k A[c, k] h_k , Σ_k A[k, c] h_k] (along A and Aᵀ), then
        z = σ(W_z a + U_z h),  r = σ(W_r a + U_r h),
        h̃ = tanh(W_h a + U_h (r ⊙ h)),  h ← (1 − z) ⊙ h + z ⊙ h̃.
    """

    def __init__(self, dim: int, adjacency: np.ndarray, steps: int):
        super().__init__()
        a = torch.as_tensor(np.asarray(adjacency, dtype=np.float32))
        self.register_buffer("a_in", a)
        self.register_buffer("a_out", a.t().contiguous())
        self.steps = steps
        self.w_msg = nn.Linear(2 * dim, 3 * dim)        # W_z, W_r, W_h stacked
        self.u_gate = nn.Linear(dim, 2 * dim, bias=False)  # U_z, U_r
        self.u_cand = nn.Linear(dim, dim, bias=False)      # U_h

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, C, D] → [B, C, D] after ``steps`` updates."""
        for _ in range(self.steps):
            msg = torch.cat([self.a_in @ h, self.a_out @ h], dim=-1)
            mz, mr, mh = self.w_msg(msg).chunk(3, dim=-1)
            uz, ur = self.u_gate(h).chunk(2, dim=-1)
            z, r = torch.sigmoid(mz + uz), torch.sigmoid(mr + ur)
            h = (1 - z) * h + z * torch.tanh(mh + self.u_cand(r * h))
        return h


class SSGRL(FrozenStagesMixin, MLICModel):
    """forward(batch) → {"logits": [B, C], "attention": [B, C, h·w]}."""

    def __init__(self, cfg: SSGRLConfig, info: DataInfo):
        super().__init__()
        check_side_info(info, "ssgrl")
        self.backbone, width, self.n_frozen, record = build_trunk(cfg)
        emb = np.asarray(info.word_embeddings, dtype=np.float32)
        self.register_buffer("embeddings", torch.from_numpy(emb))
        self.decouple = SemanticDecoupling(width, emb.shape[1], cfg.attention_dim)
        prob = conditional_probability(info.cooccurrence, info.class_counts)
        self.graph = GatedGraph(width, prob, cfg.time_steps)
        out_dim = cfg.output_dim or width
        self.fuse = nn.Linear(2 * width, out_dim)
        c = info.num_classes
        bound = 1.0 / math.sqrt(out_dim)
        self.cls_weight = nn.Parameter(torch.empty(c, out_dim).uniform_(-bound, bound))
        self.cls_bias = nn.Parameter(torch.empty(c).uniform_(-bound, bound))
        self.record: Dict[str, object] = {
            **record, "graph": "P(L_j|L_i), diagonal 0", "time_steps": cfg.time_steps,
            "embeddings": info.embedding_source}

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        fmap = self.run_trunk(batch["image"])
        h0, attn = self.decouple(fmap, self.embeddings)
        out = torch.tanh(self.fuse(torch.cat([self.graph(h0), h0], dim=-1)))  # [B, C, O]
        # Per-class linear layer in float32 (bfloat16 logits tie; docs/protocol.md).
        with no_autocast(out):
            logits = (at_least_f32(out) * self.cls_weight).sum(-1) + self.cls_bias
        return {"logits": logits, "attention": attn}


@register_method("ssgrl", config=SSGRLConfig)
def build(cfg: SSGRLConfig, info: DataInfo) -> MLICModel:
    return SSGRL(cfg, info)
