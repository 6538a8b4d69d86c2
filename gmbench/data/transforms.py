"""Image (+ box) transform presets, built on torchvision.transforms.v2 so that
boxes follow every crop, resize and flip.

* ``mlgcn``  train: multi-scale crop (scales 1, .875, .75, .66, .5 of the short
  side, aspect distortion ≤ 2 steps, 5 fixed positions) → image_size², flip.
  test: resize to image_size².
* ``ssgrl``  train: resize to 640·s, random crop of side {640, 576, 512, 384, 320}·s,
  resize to 576·s, flip; test: resize 640·s, centre crop 576·s; s = image_size / 576.
* ``plain``  train: resize to image_size² and flip; test: resize.
* ``asl``    train: resize to image_size², RandAugment (2 ops, magnitude 9), Cutout
  (RandomErasing, p 0.5, up to a quarter of the image, grey), as in the ASL recipe; test:
  resize. With boxes, RandAugment keeps to its photometric ops (torchvision's v2 RandAugment
  does not move boxes), so boxes stay exact; Cutout never moves them.
All end with ImageNet normalisation.
"""
from __future__ import annotations

import random
import warnings
from typing import Any, Dict, List

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

# Cutout (RandomErasing) never moves boxes; torchvision warns about passing them through.
warnings.filterwarnings("ignore", message=r"RandomErasing\(\) is currently passing through")

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
MLGCN_SCALES = (1.0, 0.875, 0.75, 0.66, 0.5)


def _image_size(flat_inputs: List[Any]):
    """(h, w) of the first image among a transform's inputs (boxes carry the same canvas)."""
    for x in flat_inputs:
        if isinstance(x, (Image.Image, tv_tensors.Image)) or (
                torch.is_tensor(x) and not isinstance(x, tv_tensors.BoundingBoxes) and x.ndim >= 2):
            return tuple(F.get_size(x))
    raise TypeError("MultiScaleCrop needs an image among its inputs")


class MultiScaleCrop(v2.Transform):
    """ML-GCN's multi-scale crop: crop sides drawn from ``scales``·short side, with
    at most ``max_distort`` steps between the width and height scale indices, at one
    of five fixed positions (corners and centre), then resized to ``size``²."""

    def __init__(self, size: int, scales=MLGCN_SCALES, max_distort: int = 2):
        super().__init__()
        self.size, self.scales, self.max_distort = size, scales, max_distort

    def _get_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        h, w = _image_size(flat_inputs)
        base = min(h, w)
        sides = [int(base * s) for s in self.scales]
        pairs = [(cw, ch) for i, ch in enumerate(sides) for j, cw in enumerate(sides)
                 if abs(i - j) <= self.max_distort]
        cw, ch = random.choice(pairs)
        dx, dy = (w - cw) // 2, (h - ch) // 2
        x, y = random.choice([(0, 0), (2 * dx, 0), (0, 2 * dy), (2 * dx, 2 * dy), (dx, dy)])
        return {"top": y, "left": x, "height": ch, "width": cw}

    def _transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        out = F.crop(inpt, **params)
        return F.resize(out, [self.size, self.size], antialias=True)

    # torchvision 0.17 (the pinned stack) calls the underscored hooks; newer releases (0.26 on
    # the lent GPUs) call these public names and would otherwise raise NotImplementedError.
    make_params = _get_params
    transform = _transform


_GEOMETRIC = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}


class BoxSafeRandAugment(v2.RandAugment):
    """v2.RandAugment; called with (image, boxes) it draws only photometric ops for the image
    and returns the boxes unchanged (v2.RandAugment refuses BoundingBoxes)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.photometric = v2.RandAugment(**kw)
        self.photometric._AUGMENTATION_SPACE = {
            k: v for k, v in v2.RandAugment._AUGMENTATION_SPACE.items() if k not in _GEOMETRIC}

    def forward(self, *inputs):
        if len(inputs) == 2 and isinstance(inputs[1], tv_tensors.BoundingBoxes):
            return self.photometric(inputs[0]), inputs[1]
        return super().forward(*inputs)


def build_transform(preset: str, image_size: int, train: bool) -> v2.Compose:
    """A callable ``(image, boxes) -> (image, boxes)``; boxes may be a tv_tensors.BoundingBoxes."""
    s = image_size
    if preset == "mlgcn":
        geo = [MultiScaleCrop(s), v2.RandomHorizontalFlip()] if train else [v2.Resize((s, s), antialias=True)]
    elif preset == "ssgrl":
        k = s / 576.0
        big = int(round(640 * k))
        if train:
            crops = [int(round(c * k)) for c in (640, 576, 512, 384, 320)]
            geo = [v2.Resize((big, big), antialias=True),
                   v2.RandomChoice([v2.RandomCrop(c) for c in crops]),
                   v2.Resize((s, s), antialias=True), v2.RandomHorizontalFlip()]
        else:
            geo = [v2.Resize((big, big), antialias=True), v2.CenterCrop(s)]
    elif preset == "asl":
        geo = [v2.Resize((s, s), antialias=True)]
        if train:
            return v2.Compose([v2.ToImage(), *geo, BoxSafeRandAugment(), v2.ToDtype(torch.float32, scale=True),
                               v2.RandomErasing(p=0.5, scale=(0.02, 0.25), value=0.5),
                               v2.ClampBoundingBoxes(), v2.Normalize(MEAN, STD)])
    elif preset == "plain":
        geo = [v2.Resize((s, s), antialias=True)] + ([v2.RandomHorizontalFlip()] if train else [])
    else:
        raise ValueError(f"unknown transform preset {preset!r}; choose mlgcn, ssgrl, plain or asl")
    return v2.Compose([v2.ToImage(), *geo, v2.ToDtype(torch.float32, scale=True),
                       v2.ClampBoundingBoxes(), v2.Normalize(MEAN, STD)])
