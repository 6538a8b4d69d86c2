"""Label side information shared by the graph methods (ML-GCN, SSGRL): shape checks of
``DataInfo``'s word embeddings and co-occurrence counts, and the conditional label
probability P(L_j | L_i) both build their class graph from."""
from __future__ import annotations

import numpy as np

from gmbench.data.base import DataInfo


def check_side_info(info: DataInfo, method: str) -> None:
    """Clear errors for side information whose shapes do not match the classes."""
    c = info.num_classes
    emb, co, counts = (np.asarray(info.word_embeddings), np.asarray(info.cooccurrence),
                       np.asarray(info.class_counts))
    if emb.ndim != 2 or emb.shape[0] != c:
        raise ValueError(f"{method}: DataInfo.word_embeddings has shape {emb.shape}, expected "
                         f"[{c}, D] (one row per class); rebuild the side-information cache")
    if co.shape != (c, c) or counts.shape != (c,):
        raise ValueError(f"{method}: DataInfo.cooccurrence {co.shape} / class_counts "
                         f"{counts.shape} do not match {c} classes; rebuild the side-information cache")


def conditional_probability(cooccurrence: np.ndarray, class_counts: np.ndarray) -> np.ndarray:
    """P [C, C] with P[i, j] = P(L_j | L_i) = cooc[i, j] / count[i] on the training split.

    The diagonal is set to 0 (self-loops are added by each method's own rule) and the
    rows of classes with no training image are 0 (no evidence, so no edges).
    """
    co = np.asarray(cooccurrence, dtype=np.float64)
    n = np.asarray(class_counts, dtype=np.float64)
    if co.ndim != 2 or co.shape[0] != co.shape[1] or n.shape != (co.shape[0],):
        raise ValueError(f"cooccurrence must be [C, C] and class_counts [C]; "
                         f"got {co.shape} and {n.shape}")
    if (co < 0).any() or (n < 0).any():
        raise ValueError("cooccurrence and class_counts must be non-negative counts")
    prob = np.divide(co, n[:, None], out=np.zeros_like(co), where=n[:, None] > 0)
    np.fill_diagonal(prob, 0.0)
    return prob
