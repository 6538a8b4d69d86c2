"""The torchvision weight files gmbench may load, as fetchable catalogue entries.

Each is placed where ``gmbench.models.weights.hub_state_dict`` looks for it: the torch hub
cache under the enum's own file name (``hub_weights_path``). The checksum is the sha256 prefix
that file name carries (torch.hub's convention, published by torchvision in each enum's URL);
``hub_state_dict`` checks it again on every load. Sizes are torchvision's ``_file_size`` meta
(MiB, rounded by torchvision), so they are approximate.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

from ..data.sources import Archive
from .weights import hash_prefix, hub_weights_path

_SOURCE = "sha256 prefix in torchvision's file name (torch.hub convention); size: enum meta"


def known_enums() -> List:
    """Every torchvision weights enum gmbench loads: ImageNet ResNets, the COCO Faster R-CNN."""
    import torchvision
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights
    out = [getattr(torchvision.models, f"ResNet{d}_Weights").IMAGENET1K_V1
           for d in (18, 34, 50, 101, 152)]
    return out + [FasterRCNN_ResNet50_FPN_Weights.COCO_V1]


def enum_name(enum) -> str:
    return f"{type(enum).__name__}.{enum.name}"


def enum_by_name(name: str):
    """``ResNet101_Weights.IMAGENET1K_V1`` → the enum; None if gmbench never loads it."""
    return next((e for e in known_enums() if enum_name(e) == name), None)


def enum_for_path(path: Path):
    """The known enum whose hub-cache file is ``path``; None for any other file."""
    path = Path(path).expanduser().absolute()
    return next((e for e in known_enums() if hub_weights_path(e).absolute() == path), None)


def weights_archive(enum) -> Archive:
    """The catalogue entry of one torchvision weights file."""
    path = hub_weights_path(enum)
    prefix = hash_prefix(path.name)
    mib = enum.meta.get("_file_size")
    return Archive(path.name, enum.url, int(mib * 2 ** 20) if mib else 0,
                   f"sha256-prefix:{prefix}" if prefix else None, _SOURCE,
                   f"torchvision weights {enum_name(enum)}", size_exact=False)


def weights_target(enum) -> Path:
    return hub_weights_path(enum)

