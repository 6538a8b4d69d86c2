"""The trunk settings every method with a trunk shares, and the freezing some of them ask for.

``TrunkConfig`` (depth, backbone, pretrained) is the base of each such method's ``model:``
block. Freezing is opt-in through two subclasses, so that methods which never freeze keep the
same resolved keys (run ids hash them):

  * ``FreezableTrunkConfig`` adds ``freeze_backbone``: which leading ResNet stages get no
    gradient (``below_layer2``: stem + layer1, as Query2Label's and DETR's backbones;
    ``below_layer4``: all but layer4, as SSGRL's reference code);
  * ``FrozenBNTrunkConfig`` adds ``frozen_bn``: every BatchNorm of the trunk becomes a
    ``FrozenBatchNorm2d`` (statistics and affine parameters fixed), as Query2Label's authors.

``FrozenStagesMixin`` gives a model the matching ``train()`` (frozen stages stay in eval
mode, so their BatchNorm statistics do not move) and a trunk pass that keeps no activations
for the frozen stages.
"""
from __future__ import annotations

from typing import Dict, Literal, Tuple

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, model_validator
from torchvision.ops import FrozenBatchNorm2d

from .backbone import BackboneName, TimmTrunk, build_backbone

Depth = Literal[18, 34, 50, 101, 152]
FreezeStages = Literal["none", "below_layer2", "below_layer4"]
# Leading modules of build_resnet's Sequential (conv1, bn1, relu, maxpool, layer1, …, layer4)
# that each setting freezes.
_FROZEN_MODULES = {"none": 0, "below_layer2": 5, "below_layer4": 7}


class TrunkConfig(BaseModel):
    """depth / backbone / pretrained of a method's trunk (``gmbench.models.backbone``)."""
    model_config = ConfigDict(extra="forbid")

    depth: Depth = 101
    backbone: BackboneName = None  # timm/<name> replaces the ResNet of `depth`
    pretrained: str = "none"       # "imagenet", "none", "synthetic" (gmbench/pretrain) or a file


class FreezableTrunkConfig(TrunkConfig):
    # below_layer2: stem + layer1 get no gradient; below_layer4: everything before layer4.
    freeze_backbone: FreezeStages = "none"

    @model_validator(mode="after")
    def _timm_freeze(self):
        if self.backbone and self.freeze_backbone != "none":
            raise ValueError(f"freeze_backbone={self.freeze_backbone} names ResNet stages; with a "
                             f"timm backbone (model.backbone) set model.freeze_backbone=none")
        return self


class FrozenBNTrunkConfig(FreezableTrunkConfig):
    # True: every BatchNorm keeps its (pretrained) statistics and affine parameters.
    frozen_bn: bool = False


def frozen_stage_count(cfg: TrunkConfig) -> int:
    """How many leading modules of the ResNet trunk ``cfg`` freezes (0 when it cannot)."""
    return _FROZEN_MODULES[cfg.freeze_backbone] if isinstance(cfg, FreezableTrunkConfig) else 0


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d replaced by a FrozenBatchNorm2d holding the same
    statistics and affine parameters (buffers, so no optimizer or EMA step can move them)."""
    if isinstance(module, TimmTrunk):
        from timm.layers import freeze_batch_norm_2d  # also handles timm's BatchNormAct2d
        return freeze_batch_norm_2d(module)
    if type(module) in (nn.BatchNorm2d, nn.SyncBatchNorm):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.track_running_stats:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
            else:
                raise ValueError("model.frozen_bn: a BatchNorm without running statistics "
                                 "cannot be frozen; set model.frozen_bn=false")
        return frozen
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"model.frozen_bn: {type(module).__name__} is not a plain BatchNorm2d; "
                         f"set model.frozen_bn=false for this backbone")
    for name, child in module.named_children():
        new = freeze_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def build_trunk(cfg: TrunkConfig) -> Tuple[nn.Module, int, int, Dict[str, object]]:
    """The trunk ``cfg`` asks for, with its freezing applied.

    Returns (trunk, out_channels, n_frozen, record); trunk: [B, 3, H, W] → [B, C_out, h, w];
    the first ``n_frozen`` modules of the trunk have ``requires_grad=False``.
    """
    trunk, width, record = build_backbone(cfg)
    if isinstance(cfg, FrozenBNTrunkConfig):
        record["frozen_bn"] = cfg.frozen_bn
        if cfg.frozen_bn:
            trunk = freeze_batchnorm(trunk)
    n_frozen = frozen_stage_count(cfg)
    if isinstance(cfg, FreezableTrunkConfig):
        record["freeze_backbone"] = cfg.freeze_backbone
    for prm in trunk[:n_frozen].parameters() if n_frozen else ():
        prm.requires_grad_(False)
    return trunk, width, n_frozen, record


class FrozenStagesMixin:
    """For an nn.Module with ``self.backbone`` (a trunk from ``build_trunk``) and
    ``self.n_frozen``: frozen stages stay in eval mode, and ``run_trunk`` keeps no
    activations for them."""
    n_frozen: int = 0

    def train(self, mode: bool = True):
        super().train(mode)
        if self.n_frozen:
            self.backbone[:self.n_frozen].eval()  # frozen stages keep their BN statistics
        return self

    def run_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] → feature map [B, D, h, w]."""
        if not self.n_frozen:
            return self.backbone(x)
        with torch.no_grad():
            x = self.backbone[:self.n_frozen](x)
        return self.backbone[self.n_frozen:](x)
