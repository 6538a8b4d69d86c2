"""The ``model:`` block of method ``gm_mlic`` (defaults = the paper's COCO setting)."""
from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from gmbench.models.backbone import BackboneName
from gmbench.models.instance_settings import InstanceSettings


class GMMLICConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["gm_mlic"] = "gm_mlic"

    # Where instance features come from: "cache" = the detector's box-head features
    # (batch["inst_feat"], feat_dim wide), extracted once from the un-augmented image;
    # "online" = the frozen detector runs on every (augmented) batch; "e2e" = trainable
    # ResNet trunk + RoIAlign on the batch's boxes; "views" = the frozen detector's instances
    # of `views` augmented views per training image, cached once, one view read per epoch.
    features: Literal["e2e", "cache", "online", "views"] = "cache"
    feat_dim: int = 1024            # width of instance features (cache; online: the box head's)
    # Cache mode: which `gmbench extract --source` made the caches, or explicit cache dirs
    # (default DATA_CACHE/instances/SPLIT-SOURCE-m<top_m>, as `gmbench extract` writes).
    instance_source: Literal["detector", "boxes"] = "detector"
    cache_train: Optional[str] = None
    cache_test: Optional[str] = None
    # Online mode: the frozen Faster R-CNN (ResNet-50-FPN) of `gmbench extract --source detector`.
    detector_weights: str = "coco"  # coco (torchvision enum, hub cache) | none (random) | /path.pth
    detector_min_size: int = 800    # its resize of each (augmented) image: shorter side ...
    detector_max_size: int = 1333   # ... and longer-side cap, as in the extraction
    detector_seed: int = 0          # init seed for detector_weights=none
    # What the online detector sees (issue 25, item 8): "squashed" = the model's square input
    # (the crop squashed to image_size², at test time the whole image squashed); "crop" = the
    # same view at its own aspect ratio in the original image, resized by the detector's rule.
    detector_input: Literal["squashed", "crop"] = "squashed"
    # Views mode (docs/instances.md, "Views mode"): K augmented views per training image, drawn
    # with the data's train transform seeded by (view_seed, view, image), like a trunk row's epochs.
    views: int = 8
    view_seed: int = 0
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
    # Eq. 15 reduction over a batch of B images × C classes: "sum_classes" = sum over classes,
    # mean over images (the paper's per-image sum; default); "mean" = mean over the B·C
    # entries (C times smaller gradients); "sum" = sum over both (B times larger).
    loss_reduction: Literal["sum_classes", "mean", "sum"] = "sum_classes"

    def instance_settings(self) -> InstanceSettings:
        """The instance fields every reader outside this method takes (instances/source.py)."""
        return InstanceSettings(
            features=self.features, source=self.instance_source, top_m=self.top_m,
            feat_dim=self.feat_dim, cache_train=self.cache_train, cache_test=self.cache_test,
            detector_weights=self.detector_weights, detector_seed=self.detector_seed,
            detector_min_size=self.detector_min_size, detector_max_size=self.detector_max_size,
            detector_input=self.detector_input, views=self.views, view_seed=self.view_seed)

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

    @field_validator("top_m", "knn_k", "enc_dim", "roi_size", "feat_dim", "detector_min_size",
                     "detector_max_size", "views")
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

    @field_validator("beta")
    @classmethod
    def _beta(cls, v: float) -> float:
        if not v >= 0:  # also rejects NaN; a negative beta up-weights the frequent side
            raise ValueError(f"model.beta must be >= 0 (Eq. 15; 0 = plain BCE), got {v}")
        return v

# Settings that only some feature modes read; the others record them as unused (model_record
# "unused_settings") rather than ignore them silently. Suite defaults set depth/pretrained for
# every row, so failing validation on them would break mixed suites.
MODE_SETTINGS = {
    "e2e": ("depth", "pretrained", "roi_size", "roi_layer"),
    "cache": ("feat_dim", "instance_source", "cache_train", "cache_test"),
    "online": ("feat_dim", "detector_weights", "detector_min_size", "detector_max_size",
               "detector_seed", "detector_input"),
    "views": ("feat_dim", "detector_weights", "detector_min_size", "detector_max_size",
              "detector_seed", "detector_input", "views", "view_seed"),
}


def unused_settings(cfg: GMMLICConfig) -> dict:
    """{key: value} of the mode-specific settings that ``cfg.features`` does not read."""
    used = set(MODE_SETTINGS[cfg.features])
    keys = sorted({k for ks in MODE_SETTINGS.values() for k in ks} - used)
    return {k: getattr(cfg, k) for k in keys}
