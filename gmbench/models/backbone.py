"""torchvision ResNet trunks with explicit, recorded weight provenance.

``pretrained``:
  * ``"imagenet"`` – torchvision's weight enum (``ResNet101_Weights.IMAGENET1K_V1`` …),
    from the torch hub cache or a download, never unpickled (``gmbench.models.weights``);
  * a path to a local ``.pth`` state dict (loaded with ``weights_only=True``);
  * ``"none"`` – random init (the only choice on a machine with no internet);
  * ``"synthetic"`` – the synthetic pretraining (``gmbench.pretrain``), resolved to its file
    by the runner before the model is built.

``model.backbone: timm/<name>`` replaces the ResNet by any timm model (``build_backbone``):
random init or a local weights file, the feature map exposed as [B, D, h, w].
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torchvision
from pydantic import AfterValidator

from .weights import hub_state_dict, load_weights_file

_DEPTHS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}
_ENUMS = {18: "ResNet18_Weights", 34: "ResNet34_Weights", 50: "ResNet50_Weights",
          101: "ResNet101_Weights", 152: "ResNet152_Weights"}


def load_state_dict_file(path: str) -> Dict[str, torch.Tensor]:
    """A local checkpoint as a flat state dict; never unpickles arbitrary objects."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"weights file {p} does not exist; pass an existing .pth "
                                f"state dict, 'imagenet', or 'none'")
    obj = load_weights_file(p, "Pass a plain .pth state dict, 'imagenet', or 'none'.")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    return {k.removeprefix("module."): v for k, v in obj.items()}


def build_resnet(depth: int = 101, pretrained: str = "none") -> Tuple[nn.Module, int, Dict[str, str]]:
    """ResNet trunk without pooling and fc.

    Returns (trunk, out_channels, record). trunk: [B, 3, H, W] → [B, C_out, H/32, W/32].
    """
    if depth not in _DEPTHS:
        raise ValueError(f"resnet depth {depth} is not one of {sorted(_DEPTHS)}")
    ctor = getattr(torchvision.models, _DEPTHS[depth])
    net = ctor(weights=None)
    if pretrained == "none":
        source = "random-init"
    elif pretrained == "imagenet":
        net.load_state_dict(hub_state_dict(getattr(torchvision.models, _ENUMS[depth]).IMAGENET1K_V1))
        source = f"torchvision:{_ENUMS[depth]}.IMAGENET1K_V1"
    elif pretrained == "synthetic":
        raise ValueError("model.pretrained=synthetic names the synthetic pretraining, which the "
                         "runner prepares and passes as a file (gmbench.pretrain.resolve_model); "
                         "building this model directly, pass that file (gmbench.pretrain."
                         "weights_path) as pretrained")
    else:
        state = load_state_dict_file(pretrained)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(f"weights file {pretrained} does not fit resnet{depth}: "
                             f"missing {missing[:5]}, unexpected {list(unexpected)[:5]}")
        source = f"file:{Path(pretrained).expanduser().resolve()}"
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                          net.layer1, net.layer2, net.layer3, net.layer4)
    out_ch = net.fc.in_features
    return trunk, out_ch, {"backbone": f"resnet{depth}", "weights": source}


# -- timm backbones (``model.backbone: timm/<name>``) ---------------------------------------

def check_backbone_name(name: Optional[str]) -> Optional[str]:
    """``None`` (torchvision ResNet of ``model.depth``) or ``timm/<a timm model name>``."""
    if name is None:
        return None
    if not name.startswith("timm/"):
        raise ValueError(f"model.backbone {name!r}: use timm/<model name> (e.g. timm/resnet50), "
                         f"or null for the torchvision ResNet of model.depth")
    import timm
    arch = name[len("timm/"):]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"model.backbone {name!r}: timm {timm.__version__} has no model {arch!r}.{hint}")
    return name


BackboneName = Annotated[Optional[str], AfterValidator(check_backbone_name)]


class TimmTrunk(nn.Module):
    """A timm model without pooling and classifier: [B, 3, H, W] → feature map [B, D, h, w].

    Transformers' token outputs [B, N, D] are returned as the patch grid (prefix tokens
    such as CLS dropped), so heads that need spatial features work on them too.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net.forward_features(x)
        if f.dim() == 3:  # [B, N, D] tokens
            f = f[:, getattr(self.net, "num_prefix_tokens", 0):]
            side = int(round(f.shape[1] ** 0.5))
            if side * side != f.shape[1]:
                raise ValueError(f"{type(self.net).__name__}: {f.shape[1]} patch tokens do not "
                                 f"form a square grid; use a square model.image_size")
            f = f.transpose(1, 2).reshape(f.shape[0], f.shape[2], side, side)
        elif f.dim() == 4 and getattr(self.net, "output_fmt", "NCHW") == "NHWC":
            f = f.permute(0, 3, 1, 2)
        return f


def _weights_file(path: str) -> Dict[str, torch.Tensor]:
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"weights file {p} does not exist")
        return load_file(str(p))
    return load_state_dict_file(path)


def build_timm(name: str, pretrained: str = "none") -> Tuple[nn.Module, int, Dict[str, str]]:
    """``timm/<arch>`` trunk. pretrained: ``none`` or a local ``.safetensors`` / ``.pth`` file
    (timm's own key names; the classifier's keys are ignored). Nothing is downloaded."""
    import timm
    arch = name[len("timm/"):]
    net = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="")
    if pretrained == "none":
        source = "random-init"
    elif pretrained == "imagenet":
        raise ValueError(f"model.pretrained=imagenet with model.backbone={name}: gmbench does not "
                         f"download timm weights; pass a local .safetensors/.pth file or none")
    else:
        state = _weights_file(pretrained)
        missing, unexpected = net.load_state_dict(state, strict=False)
        head = str(net.pretrained_cfg.get("classifier", "fc"))
        unexpected = [k for k in unexpected if not k.startswith(head + ".")]
        if missing or unexpected:
            raise ValueError(f"weights file {pretrained} does not fit {name}: missing "
                             f"{list(missing)[:5]}, unexpected {unexpected[:5]}")
        source = f"file:{Path(pretrained).expanduser().resolve()}"
    return TimmTrunk(net), int(net.num_features), {"backbone": name, "weights": source}


def build_backbone(cfg) -> Tuple[nn.Module, int, Dict[str, str]]:
    """The trunk a method config asks for: ``cfg.backbone`` (timm) or ResNet-``cfg.depth``."""
    name = getattr(cfg, "backbone", None)
    if name:
        return build_timm(name, cfg.pretrained)
    return build_resnet(cfg.depth, cfg.pretrained)
