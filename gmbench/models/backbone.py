"""torchvision ResNet trunks with explicit, recorded weight provenance.

``pretrained``:
  * ``"imagenet"`` – torchvision's weight enum (``ResNet101_Weights.IMAGENET1K_V1`` …),
    from the torch hub cache or a download; a clear error where neither works;
  * a path to a local ``.pth`` state dict (loaded with ``weights_only=True``);
  * ``"none"`` – random init (the only choice on a machine with no internet).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torchvision

_DEPTHS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}
_ENUMS = {18: "ResNet18_Weights", 34: "ResNet34_Weights", 50: "ResNet50_Weights",
          101: "ResNet101_Weights", 152: "ResNet152_Weights"}


def load_state_dict_file(path: str) -> Dict[str, torch.Tensor]:
    """A local checkpoint as a flat state dict; never unpickles arbitrary objects."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"weights file {p} does not exist; pass an existing .pth "
                                f"state dict, 'imagenet', or 'none'")
    obj = torch.load(str(p), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ValueError(f"weights file {p} holds a {type(obj).__name__}, not a state dict")
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
        enum = getattr(torchvision.models, _ENUMS[depth]).IMAGENET1K_V1
        try:
            state = enum.get_state_dict(progress=False)
        except Exception as e:  # no internet and nothing in the hub cache
            raise RuntimeError(
                f"could not obtain torchvision weights {_ENUMS[depth]}.IMAGENET1K_V1 ({e}). "
                f"Put the file in the torch hub cache ({torch.hub.get_dir()}/checkpoints), "
                f"pass a local file with pretrained=/path/to/weights.pth, "
                f"or use pretrained=none") from None
        net.load_state_dict(state)
        source = f"torchvision:{_ENUMS[depth]}.IMAGENET1K_V1"
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
