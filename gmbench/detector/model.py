"""Faster R-CNN networks from an architecture spec, and the detector weights file.

Weights file (``gmbench detector train`` writes it; ``gmbench extract --weights``
reads it; ``torch.load(..., weights_only=True)`` only)::

    {"format": "gmbench-detector/1",
     "arch": {"backbone": "resnet18", "fpn": true, "anchor_sizes": [...],
              "aspect_ratios": [...], "representation_size": 256,
              "min_size": 128, "max_size": 128},
     "num_classes": C + 1,                    # background = 0, dataset class c = c + 1
     "class_names": [C names],
     "trained_on": {"dataset": ..., "split": ..., "n_images": ..., "data_config": {...}},
     "config": {...}, "config_hash": "...", "ap50": float | None,
     "state_dict": {...}}                     # BN statistics as FrozenBatchNorm2d buffers

A plain torchvision ``fasterrcnn_resnet50_fpn`` state dict (no metadata) is also
accepted; its architecture is read off the tensor names and shapes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops import misc as misc_nn_ops

from ..models.weights import hub_state_dict, load_weights_file

FORMAT = "gmbench-detector/1"
TORCHVISION_R50 = {"backbone": "resnet50", "fpn": True, "anchor_sizes": [32, 64, 128, 256, 512],
                   "aspect_ratios": [0.5, 1.0, 2.0], "representation_size": 1024,
                   "fpn_channels": 256, "min_size": 800, "max_size": 1333}
_BLOCKS = {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34"}
_BOTTLENECK = {6: "resnet50", 23: "resnet101", 36: "resnet152"}  # blocks in layer3


def arch_name(arch: dict) -> str:
    return f"fasterrcnn_{arch['backbone']}_fpn"


def resnet_fpn(name: str, out_channels: int, trainable_layers: int, norm_layer,
               weights=None) -> BackboneWithFPN:
    """torchvision's ResNet-FPN trunk (as ``resnet_fpn_backbone``) with a chosen FPN width.

    Features: dict of 5 maps (strides 4, 8, 16, 32, 64), ``out_channels`` each.
    The width sets the RoIAlign and box-head input size (256 in torchvision; a
    narrower one makes CPU training of small detectors affordable).
    """
    import torchvision
    body = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer)
    if weights is not None:  # a torchvision enum: read by gmbench, never unpickled
        body.load_state_dict(hub_state_dict(weights))
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for pname, p in body.named_parameters():
        if not any(pname.startswith(t) for t in train):
            p.requires_grad_(False)
    c2 = body.inplanes // 8  # layer1 width (64 for basic blocks, 256 for bottlenecks)
    return BackboneWithFPN(body, {f"layer{k}": str(k - 1) for k in range(1, 5)},
                           [c2 * 2 ** (k - 1) for k in range(1, 5)], out_channels,
                           extra_blocks=LastLevelMaxPool())


def build_faster_rcnn(arch: dict, num_classes: int, trainable: bool = False,
                      trainable_layers: int = 0, backbone_weights=None, **kw) -> FasterRCNN:
    """Faster R-CNN with a ResNet-FPN trunk.

    ``trainable``: BatchNorm2d layers that learn (training from scratch needs
    them); else FrozenBatchNorm2d, as torchvision uses for inference.  Both keep
    the same parameter/buffer names (minus ``num_batches_tracked``), so a trained
    state dict loads into the frozen network.  ``kw`` goes to ``FasterRCNN``.
    """
    norm = nn.BatchNorm2d if trainable else misc_nn_ops.FrozenBatchNorm2d
    backbone = resnet_fpn(arch["backbone"], int(arch.get("fpn_channels", 256)), trainable_layers,
                          norm, backbone_weights)
    anchors = AnchorGenerator(tuple((int(s),) for s in arch["anchor_sizes"]),
                              (tuple(float(r) for r in arch["aspect_ratios"]),) * len(arch["anchor_sizes"]))
    kw.setdefault("min_size", arch["min_size"])
    kw.setdefault("max_size", arch["max_size"])
    # FasterRCNN builds a 1024-wide TwoMLPHead itself; other widths need the head passed in.
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    rep, res = int(arch["representation_size"]), 7  # 7 = the default box_roi_pool output size
    head = TwoMLPHead(backbone.out_channels * res ** 2, rep)
    return FasterRCNN(backbone, num_classes=None, rpn_anchor_generator=anchors, box_head=head,
                      box_predictor=FastRCNNPredictor(rep, num_classes), **kw)


def export_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """State dict that loads into the FrozenBatchNorm2d network (no BN step counters)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def infer_arch(state: Dict[str, torch.Tensor], path) -> dict:
    """The architecture of a plain Faster R-CNN state dict, from its tensor names and shapes."""
    if not any(k.startswith("backbone.body.") for k in state) or \
            "roi_heads.box_head.fc6.weight" not in state:
        hint = ""
        if "fc.weight" in state or "conv1.weight" in state:
            hint = " It looks like a ResNet classifier state dict."
        raise ValueError(
            f"weights file {path} is not a Faster R-CNN (ResNet-FPN) state dict: it has no "
            f"'backbone.body.*' / 'roi_heads.box_head.fc6.weight' tensors.{hint} Pass a file "
            f"written by `gmbench detector train`, a torchvision fasterrcnn_resnet50_fpn state "
            f"dict, 'coco' or 'none'")
    blocks = tuple(len({k.split(".")[3] for k in state if k.startswith(f"backbone.body.layer{i}.")})
                   for i in range(1, 5))
    bottleneck = "backbone.body.layer1.0.conv3.weight" in state
    name = _BOTTLENECK.get(blocks[2]) if bottleneck else _BLOCKS.get(blocks)
    if name is None:
        raise ValueError(f"weights file {path}: a ResNet-FPN trunk with {blocks} blocks per stage "
                         f"matches no torchvision ResNet")
    arch = dict(TORCHVISION_R50, backbone=name)
    arch["representation_size"] = int(state["roi_heads.box_head.fc6.weight"].shape[0])
    arch["fpn_channels"] = int(state["backbone.fpn.inner_blocks.0.0.weight"].shape[0]) \
        if "backbone.fpn.inner_blocks.0.0.weight" in state else 256
    n_anchor = int(state["rpn.head.cls_logits.weight"].shape[0]) if "rpn.head.cls_logits.weight" in state else 3
    if n_anchor != 3:
        raise ValueError(f"weights file {path}: {n_anchor} anchors per location; without a gmbench "
                         f"header only torchvision's 3 aspect ratios can be rebuilt")
    return arch


def read_detector_file(path) -> Tuple[Dict[str, torch.Tensor], dict]:
    """(state dict, metadata with at least 'arch' and 'num_classes') of a weights file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"detector weights file {p} does not exist; train one with "
                                f"`python -m gmbench detector train`, or pass 'coco' or 'none'")
    obj = load_weights_file(p, "Pass a plain state dict or a file written by "
                               "`gmbench detector train`.")
    if obj.get("format") == FORMAT:
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        state = obj["state_dict"]
    else:
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
        state = {k.removeprefix("module."): v for k, v in obj.items()}
        meta = {"arch": infer_arch(state, p)}
    if "roi_heads.box_predictor.cls_score.weight" not in state:
        raise ValueError(f"weights file {p} has no box predictor ('roi_heads.box_predictor.*'); "
                         f"it is not a complete Faster R-CNN")
    meta.setdefault("num_classes", int(state["roi_heads.box_predictor.cls_score.weight"].shape[0]))
    return state, meta


def load_into(model: nn.Module, state: Dict[str, torch.Tensor], path, arch: dict) -> None:
    """Strict load; any mismatch is a clear error naming the file and the architecture."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        first = str(e).split("\n")[1].strip() if "\n" in str(e) else str(e)
        raise ValueError(f"weights file {path} does not fit {arch_name(arch)} "
                         f"(representation {arch['representation_size']}): {first}") from None
    if missing or unexpected:
        raise ValueError(f"weights file {path} does not fit {arch_name(arch)}: missing "
                         f"{list(missing)[:5]}, unexpected {list(unexpected)[:5]}")


def save_detector_file(path, model: nn.Module, meta: dict) -> Path:
    from ..utils.io import atomic_torch_save
    obj = dict(meta, format=FORMAT, state_dict=export_state(model))
    return atomic_torch_save(obj, path)


def class_names_of(meta: dict) -> Optional[list]:
    names = meta.get("class_names")
    return list(names) if names else None
