"""The ``model:`` block of method ``gm_mlic`` (defaults = the paper's COCO setting)."""
from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from gmbench.models.backbone import BackboneName


class GMMLICConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["gm_mlic"] = "gm_mlic"

    # Where instance features come from: "cache" = the detector's box-head features
    # (batch["inst_feat"], feat_dim wide); "e2e" = trainable ResNet trunk + RoIAlign.
    features: Literal["e2e", "cache"] = "cache"
    feat_dim: int = 1024            # width of cached instance features (cache mode)
    # Cache mode: which `gmbench extract --source` made the caches, or explicit cache dirs
    # (default DATA_CACHE/instances/SPLIT-SOURCE-m<top_m>, as `gmbench extract` writes).
    instance_source: Literal["detector", "boxes"] = "detector"
    cache_train: Optional[str] = None
    cache_test: Optional[str] = None
    depth: Literal[18, 34, 50, 101, 152] = 101   # ResNet depth of the e2e trunk
    backbone: BackboneName = None   # e2e trunk: timm/<name> instead of the ResNet (roi_layer layer4)
    pretrained: str = "none"        # e2e trunk weights: imagenet | none | /path.pth
    roi_size: int = 7               # RoIAlign output (roi_size²), then average-pooled
    roi_layer: Literal["layer4", "layer3"] = "layer4"  # layer3 = RoIAlign on C4, layer4 per RoI
    # "auto" = DGL when it imports and runs on the device, else dense.
    backend: Literal["auto", "dgl", "dense"] = "auto"
    top_m: int = 35                 # instances kept per image (first slots = most confident)
    knn_k: int = 5                  # in-degree of the instance kNN graph
    enc_dim: int = 256              # encoder output width, nodes and edges
    dims: List[int] = [512, 256]    # output width of each GNB module (k = len(dims))
    mlp_layers: int = 2             # Linear layers per MLP (ReLU between)
    mlp_norm: Literal["layer", "none"] = "layer"  # LayerNorm on every state/message MLP output
    residual: bool = False          # x ← x + φ(·) in modules whose width does not change (not in the paper)
    use_instance_graph: bool = True  # False = "w/o Go"
    use_label_graph: bool = True     # False = "w/o Gl"
    use_matching_edges: bool = True  # False = "w/o ILM edges" (dot-product readout)
    beta: float = 0.4               # Eq. 15 class-imbalance weight (0 on VOC)

    @model_validator(mode="after")
    def _timm_roi(self):
        if self.backbone and self.roi_layer != "layer4":
            raise ValueError("roi_layer=layer3 splits a ResNet's stages; a timm backbone "
                             "(model.backbone) needs roi_layer=layer4")
        return self

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: List[int]) -> List[int]:
        if not v or any(d < 1 for d in v):
            raise ValueError(f"model.dims must be a non-empty list of positive widths, got {v}")
        return v

    @field_validator("top_m", "knn_k", "enc_dim", "roi_size", "feat_dim")
    @classmethod
    def _positive(cls, v: int, info) -> int:
        if v < 1:
            raise ValueError(f"model.{info.field_name} must be >= 1, got {v}")
        return v

    @field_validator("mlp_layers")
    @classmethod
    def _layers(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"model.mlp_layers must be >= 2 (1 would make every MLP linear), got {v}")
        return v
