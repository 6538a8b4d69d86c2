"""GM-MLIC (IJCAI-21) as method ``gm_mlic``: assignment graph + GNB matching selection.

Backends: ``dgl`` (batched heterograph) and ``dense`` (masked [B, M, C, D] tensors)
share one parameter module; ``auto`` picks DGL where it runs.
"""
from gmbench.data.base import DataInfo
from gmbench.registry import register_method

from .config import GMMLICConfig
from .loss import weighted_bce_from_logits
from .model import GMMLIC

__all__ = ["GMMLIC", "GMMLICConfig", "build", "weighted_bce_from_logits"]


@register_method("gm_mlic", config=GMMLICConfig)
def build(cfg: GMMLICConfig, info: DataInfo) -> GMMLIC:
    """The model for ``info``'s label set: word embeddings [C, D] as label-node attributes,
    label ratios [C] for the Eq. 15 weights."""
    return GMMLIC(cfg, info.word_embeddings, info.label_ratios)
