"""The ``detector:`` block: a Faster R-CNN trained on a dataset's training-split boxes.

Pure pydantic (no torch import), so ``gmbench.config`` can validate it with the
rest of a run's config before any work starts.  The same class configures
``gmbench detector train`` and a suite row's ``detector:`` block (the runner then
trains it once per (data config, detector config) and extracts both splits with it).
"""
from __future__ import annotations

from typing import List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

ARCHS = ("resnet18_fpn", "resnet34_fpn", "resnet50_fpn", "resnet101_fpn")
# torchvision's fasterrcnn_resnet50_fpn anchors: one size per FPN level (P2..P6).
DEFAULT_ANCHORS = [32, 64, 128, 256, 512]


class DetectorTrainConfig(BaseModel):
    """Architecture, training and extraction settings of a trained detector."""
    model_config = ConfigDict(extra="forbid")

    # -- architecture (stored in the weights file; `gmbench extract` rebuilds it) --
    arch: Literal["resnet18_fpn", "resnet34_fpn", "resnet50_fpn", "resnet101_fpn"] = "resnet50_fpn"
    backbone_weights: str = "imagenet"   # imagenet | none | synthetic (gmbench/pretrain) | FILE (a ResNet state dict)
    trainable_layers: int = 3            # ResNet stages trained (5 = all; forced to 5 from scratch)
    min_size: int = 800                  # GeneralizedRCNNTransform resize (shorter side) ...
    max_size: int = 1333                 # ... longer side cap
    anchor_sizes: List[int] = list(DEFAULT_ANCHORS)   # one anchor size per FPN level, 5 levels
    representation_size: int = 1024      # TwoMLPHead width = instance feature width D
    fpn_channels: int = 256              # FPN width (torchvision: 256); RoIAlign input channels
    # -- training --
    epochs: int = 12
    batch_size: int = 2
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_steps: List[int] = [8, 11]        # epochs after which lr *= 0.1 (torchvision's 1x recipe)
    warmup_iters: int = 500
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    hflip: bool = True                   # random horizontal flip of training images
    max_train_images: Optional[int] = None   # the first N training images only (tests, budgets)
    # "run": the seed of the run that trains it (a suite row's seed), so that a row's spread
    # over seeds includes the detector's training; an integer: one detector for every seed
    seed: Union[int, Literal["run"]] = 0
    num_threads: Optional[int] = None
    num_workers: int = 0
    ckpt_every_steps: int = 0            # 0 = end of each epoch only
    keep_last: int = 2
    evaluate: bool = True                # box AP on the test split (pycocotools) at the end
    # -- extraction (runner: instances of both splits) --
    extract_batch_size: int = 8
    score_thresh: float = 0.0

    @field_validator("min_size", "max_size", "representation_size", "fpn_channels", "epochs", "batch_size",
                     "rpn_batch_size_per_image", "box_batch_size_per_image", "keep_last",
                     "extract_batch_size")
    @classmethod
    def _positive(cls, v: int, info) -> int:
        if v < 1:
            raise ValueError(f"detector.{info.field_name} must be >= 1, got {v}")
        return v

    @field_validator("anchor_sizes")
    @classmethod
    def _anchors(cls, v: List[int]) -> List[int]:
        if len(v) != 5 or any(a < 1 for a in v):
            raise ValueError(f"detector.anchor_sizes needs 5 positive sizes (FPN levels P2..P6), got {v}")
        return v

    @field_validator("trainable_layers")
    @classmethod
    def _layers(cls, v: int) -> int:
        if not 0 <= v <= 5:
            raise ValueError(f"detector.trainable_layers must be in 0..5, got {v}")
        return v

    @model_validator(mode="after")
    def _scratch(self):
        if self.lr <= 0:
            raise ValueError(f"detector.lr must be > 0, got {self.lr}")
        if self.max_train_images is not None and self.max_train_images < 1:
            raise ValueError(f"detector.max_train_images must be >= 1, got {self.max_train_images}")
        if self.backbone_weights == "none":
            self.trainable_layers = 5  # nothing pretrained to keep frozen
        return self

    def arch_spec(self) -> dict:
        """What ``build_faster_rcnn`` needs to rebuild the network (stored in the weights file)."""
        return {"backbone": self.arch.removesuffix("_fpn"), "fpn": True,
                "anchor_sizes": list(self.anchor_sizes), "aspect_ratios": [0.5, 1.0, 2.0],
                "representation_size": self.representation_size, "fpn_channels": self.fpn_channels,
                "min_size": self.min_size, "max_size": self.max_size}
