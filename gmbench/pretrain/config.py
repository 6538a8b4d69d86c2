"""The ``pretrain:`` block: a ResNet trained once on synthetic images, the demo's ImageNet.

Pure pydantic (no torch import), so ``gmbench.config`` validates it with the rest of a run's
config. A run uses it when ``model.pretrained: synthetic`` (its trunk starts from it) or
``detector.backbone_weights: synthetic`` (its detector's trunk does); such a config without a
``pretrain:`` block gets the defaults below, so the run id hashes the settings either way.

The images come from the synthetic dataset's generator (``gmbench.data.synthetic``) with the
block's own world seed (``data_seed``) and their own image streams (split ids 3 and 4, which
the dataset's train/test splits, ids 1 and 2, never use), so no pretraining image is a demo
train or test image, whatever the seeds.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

SYNTHETIC = "synthetic"  # the value of model.pretrained / detector.backbone_weights that asks for it
FORMAT = "gmbench-synthetic-pretrain/1"


class SyntheticPretrainConfig(BaseModel):
    """What determines the pretrained weights file (its cache key digests all of it)."""
    model_config = ConfigDict(extra="forbid")

    depth: Literal[18, 34, 50] = 18
    # -- images: the synthetic generator with its own world (scene priors, class sizes) --
    data_seed: int = Field(1, ge=0, le=2 ** 32 - 1)
    n_images: int = Field(1024, ge=1)      # training images (split id 3)
    n_val: int = Field(128, ge=1)          # held-out images (split id 4): the record's mAP
    num_classes: int = Field(10, ge=1, le=81)
    resolution: int = Field(64, ge=16)
    n_scenes: int = Field(4, ge=1)
    clutter: int = Field(3, ge=0)
    image_size: int = Field(64, ge=16)     # network input side (the dataset's `plain` resize)
    # -- training: SGD with momentum, linear warm-up then cosine decay, BCE on the labels --
    seed: int = Field(0, ge=0, le=2 ** 32 - 1)  # initialisation and batch order
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_epochs: float = Field(0.5, ge=0.0)
    hflip: bool = True
    # torch threads while it trains (None = the process's); not part of the cache key
    num_threads: Optional[int] = Field(None, ge=1)

    def key_settings(self) -> dict:
        """The settings that determine the weights (threads do not), plus the file format."""
        return {**self.model_dump(mode="json", exclude={"num_threads"}), "format": FORMAT}
