"""ML-GCN (Chen et al., CVPR 2019): label word embeddings through a GCN over a
label-correlation graph give one classifier per class, applied to a globally
max-pooled ResNet feature.

    image [B, 3, H, W] → trunk → [B, D, h, w] → max over (h, w) → x [B, D]
    embeddings [C, E] → GCN (E → hidden → D) over Â [C, C] → W [C, D]
    logits = x · Wᵀ  [B, C]

D is the trunk's width (2048 for ResNet-101, 512 for ResNet-18).
"""
from __future__ import annotations

from typing import Dict, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from gmbench.data.base import DataInfo
from gmbench.models.backbone import build_backbone
from gmbench.models.base import MLICModel, float32_matmul, no_autocast
from gmbench.models.label_graph import check_side_info, conditional_probability
from gmbench.models.trunk import TrunkConfig
from gmbench.registry import register_method


class MLGCNConfig(TrunkConfig):
    """The ``model:`` block of ``ml_gcn`` (trunk keys: ``gmbench.models.trunk``)."""
    name: Literal["ml_gcn"] = "ml_gcn"
    # GMP is part of the method (authors' README); "avg" gives the GAP ablation.
    pool: Literal["max", "avg"] = "max"
    hidden_dim: int = Field(1024, ge=1)
    tau: float = Field(0.4, gt=0.0, le=1.0)
    p: float = Field(0.2, ge=0.0, le=1.0)
    # paper: re-weighting with p (Eq. 7); reference: the authors' code (0.25 / column sums + I).
    adj_variant: Literal["paper", "reference"] = "paper"
    leaky_slope: float = Field(0.2, ge=0.0)


def mlgcn_adjacency(cooccurrence: np.ndarray, class_counts: np.ndarray, tau: float = 0.4,
                    p: float = 0.2, variant: str = "paper") -> np.ndarray:
    """ML-GCN's normalised correlation matrix Â [C, C] (float32).

    1. P[i, j] = P(L_j | L_i), diagonal 0 (``conditional_probability``).
    2. B = 1[P >= tau].
    3. paper:     A[i, j] = p · B[i, j] / Σ_k B[i, k] (j ≠ i), A[i, i] = 1 − p;
                  a node with no edge keeps A[i, i] = 1 (nothing to spread p over).
       reference: A = 0.25 · B / column sums of B (0 for an empty column), then A + I.
    4. Â = D^{-1/2} Aᵀ D^{-1/2}, D = diag(row sums of A) (every row sum is ≥ 1 − p > 0
       unless p = 1; a zero row sum is treated as 1).

    Classes with zero training count have no edges, so they only see themselves.
    """
    if variant not in ("paper", "reference"):
        raise ValueError(f"adj_variant {variant!r} is not one of 'paper', 'reference'")
    b = (conditional_probability(cooccurrence, class_counts) >= tau).astype(np.float64)
    c = b.shape[0]
    if variant == "paper":
        deg = b.sum(axis=1, keepdims=True)
        a = np.divide(p * b, deg, out=np.zeros_like(b), where=deg > 0)
        a[np.diag_indices(c)] = np.where(deg[:, 0] > 0, 1.0 - p, 1.0)
    else:
        col = b.sum(axis=0, keepdims=True)
        a = np.divide(0.25 * b, col, out=np.zeros_like(b), where=col > 0) + np.eye(c)
    d = a.sum(axis=1)
    d_isqrt = 1.0 / np.sqrt(np.where(d > 0, d, 1.0))
    return (d_isqrt[:, None] * a.T * d_isqrt[None, :]).astype(np.float32)


class MLGCN(MLICModel):
    """forward(batch) → {"logits": [B, C]}."""

    def __init__(self, cfg: MLGCNConfig, info: DataInfo):
        super().__init__()
        check_side_info(info, "ml_gcn")
        self.backbone, width, record = build_backbone(cfg)
        self.pool = cfg.pool
        emb = np.asarray(info.word_embeddings, dtype=np.float32)
        adj = mlgcn_adjacency(info.cooccurrence, info.class_counts, cfg.tau, cfg.p, cfg.adj_variant)
        # Fixed inputs of the label branch, kept in the state dict so a checkpoint is self-contained.
        self.register_buffer("embeddings", torch.from_numpy(emb))
        self.register_buffer("adj", torch.from_numpy(adj))
        self.gc1 = nn.Linear(emb.shape[1], cfg.hidden_dim, bias=False)
        self.gc2 = nn.Linear(cfg.hidden_dim, width, bias=False)
        self.slope = cfg.leaky_slope
        edges = int((adj > 0).sum() - np.count_nonzero(np.diag(adj)))
        self.record: Dict[str, object] = {
            **record, "pool": cfg.pool, "adjacency": f"{cfg.adj_variant} tau={cfg.tau} p={cfg.p}",
            "adjacency_edges": edges, "embeddings": info.embedding_source}

    def label_classifiers(self) -> torch.Tensor:
        """GCN output W [C, D]: H1 = LeakyReLU(Â E W1), W = Â H1 W2, in float32 also under
        autocast: bfloat16 would round every classifier, so float32 logits computed from
        them still tie (4 tied scores where float32 has 1, on 64 images × 20 classes)."""
        with no_autocast(self.embeddings):
            h = F.leaky_relu(self.adj @ self.gc1(self.embeddings), self.slope)
            return self.adj @ self.gc2(h)

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        fmap = self.backbone(batch["image"])
        feat = fmap.amax(dim=(2, 3)) if self.pool == "max" else fmap.mean(dim=(2, 3))
        return {"logits": float32_matmul(feat, self.label_classifiers().t())}  # no bf16 ties


@register_method("ml_gcn", config=MLGCNConfig)
def build(cfg: MLGCNConfig, info: DataInfo) -> MLICModel:
    return MLGCN(cfg, info)
