"""Image (+ box) augmentation presets, built on torchvision.transforms.v2 so that boxes
follow every crop, resize and flip. Each preset registers in ``AUGMENTATIONS`` with its
own settings (``gmbench list``); a new preset is one registered function.

* ``mlgcn``  train: multi-scale crop (scales 1, .875, .75, .66, .5 of the short
  side, aspect distortion ≤ 2 steps, 5 fixed positions) → image_size², flip.
  test: resize to image_size².
* ``ssgrl``  train: resize to 640·s, random crop of side {640, 576, 512, 384, 320}·s,
  resize to 576·s, flip; test: resize 640·s, centre crop 576·s; s = image_size / 576.
* ``plain``  train: resize to image_size² and flip; test: resize.
* ``asl``    train: resize to image_size², RandAugment (2 ops, magnitude 9), then
  RandomErasing (p 0.5, 2–25 % of the area, grey fill 0.5); test: resize. gmbench's own
  stand-in, *not* the ASL authors' pipeline (that is ``asl_cutout``); kept as it was so
  the runs recorded with it stay comparable.
* ``asl_cutout``  the ASL authors' train.py (also ML-Decoder's): resize to image_size²,
  Cutout (always; one box of half of each side, random RGB fill), RandAugment, to [0, 1]
  without normalisation; test: resize, [0, 1].
* ``csra``   the CSRA authors' training augmentation: flip, RandomResizedCrop(image_size,
  scale 0.7–1); test: resize; both on [0, 1] inputs, without normalisation.
The first four end with ImageNet normalisation. With boxes, RandAugment keeps to its
photometric ops (torchvision's v2 RandAugment does not move boxes), so boxes stay exact;
Cutout and RandomErasing never move them. Every random draw comes from python's
``random`` or torch's RNG, which ``gmbench.data.dataset.sample_rng`` seeds per
(seed, epoch, index).

Query2Label's own code inserts ``SLCutoutPIL(n_holes, length)`` without its ``cut_fact``,
so with the README's flags (``--cutout --n_holes 1 --cut_fact 0.5`` and the default
``--length -1``) the box side is −1: its corners come out reversed (x1 = x_c + 1 >
x2 = x_c − 1), which Pillow's ``ImageDraw.rectangle`` refuses (ValueError on Pillow 13.0,
checked); its ``cut_fact`` branch would read an attribute it never sets. That call is
degenerate as written, so no preset reproduces it; ``asl_cutout`` is what it intends.
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
from pydantic import BaseModel, ConfigDict, Field

from ..registry import AUGMENTATIONS, register_augmentation

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


class Cutout(v2.Transform):
    """Cutout as the ASL authors' train.py applies it (``CutoutPIL(cutout_factor=0.5)``),
    written from its description: always applied, one box of round(f·H) × round(f·W)
    pixels centred on a uniformly drawn pixel and clipped to the image, filled with one
    random RGB colour. Boxes pass unchanged. Draws from python's ``random`` only.
    image uint8 [C, H, W] (after ToImage) → same shape and dtype."""

    def __init__(self, factor: float = 0.5):
        super().__init__()
        self.factor = factor

    def _get_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        h, w = _image_size(flat_inputs)
        bh, bw = int(self.factor * h + 0.5), int(self.factor * w + 0.5)
        cy, cx = random.randrange(h), random.randrange(w)
        top, left = cy - bh // 2, cx - bw // 2
        return {"top": max(top, 0), "bottom": min(top + bh, h), "left": max(left, 0),
                "right": min(left + bw, w), "fill": [random.randint(0, 255) for _ in range(3)]}

    def _transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.BoundingBoxes) or not torch.is_tensor(inpt):
            return inpt
        out = inpt.clone()
        fill = torch.tensor(params["fill"], dtype=torch.float32)
        if not out.is_floating_point():
            fill = fill.round()
        else:
            fill = fill / 255.0
        c = out.shape[-3]
        fill = fill[:c] if c <= 3 else fill.mean().repeat(c)
        out[..., params["top"]:params["bottom"], params["left"]:params["right"]] = \
            fill.to(out.dtype)[:, None, None]
        return out

    make_params = _get_params  # torchvision ≥ 0.21's names (see MultiScaleCrop)
    transform = _transform


def _resize(s: int) -> v2.Resize:
    return v2.Resize((s, s), antialias=True)


def _finish(geo: List[Any], normalise: bool = True) -> v2.Compose:
    """ToImage → ``geo`` → float in [0, 1] (→ ImageNet normalisation)."""
    tail = [v2.Normalize(MEAN, STD)] if normalise else []
    return v2.Compose([v2.ToImage(), *geo, v2.ToDtype(torch.float32, scale=True),
                       v2.ClampBoundingBoxes(), *tail])


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MlgcnSettings(_Settings):
    max_distort: int = Field(2, ge=0)  # most steps between the width and height scale indices


class RandAugmentSettings(_Settings):
    num_ops: int = Field(2, ge=0)
    magnitude: int = Field(9, ge=0, le=30)


class AslSettings(RandAugmentSettings):
    erase_p: float = Field(0.5, ge=0, le=1)  # RandomErasing's probability


class AslCutoutSettings(RandAugmentSettings):
    cutout_factor: float = Field(0.5, gt=0, le=1)  # box side / image side


class CsraSettings(_Settings):
    min_scale: float = Field(0.7, gt=0, le=1)  # RandomResizedCrop's smallest area fraction


@register_augmentation("mlgcn", settings=MlgcnSettings)
def _mlgcn(s: int, train: bool, cfg: MlgcnSettings) -> v2.Compose:
    return _finish([MultiScaleCrop(s, max_distort=cfg.max_distort), v2.RandomHorizontalFlip()]
                   if train else [_resize(s)])


@register_augmentation("ssgrl")
def _ssgrl(s: int, train: bool, cfg=None) -> v2.Compose:
    k = s / 576.0
    big = int(round(640 * k))
    if not train:
        return _finish([_resize(big), v2.CenterCrop(s)])
    crops = [int(round(c * k)) for c in (640, 576, 512, 384, 320)]
    return _finish([_resize(big), v2.RandomChoice([v2.RandomCrop(c) for c in crops]),
                    _resize(s), v2.RandomHorizontalFlip()])


@register_augmentation("plain")
def _plain(s: int, train: bool, cfg=None) -> v2.Compose:
    return _finish([_resize(s)] + ([v2.RandomHorizontalFlip()] if train else []))


@register_augmentation("asl", settings=AslSettings)
def _asl(s: int, train: bool, cfg: AslSettings) -> v2.Compose:
    if not train:
        return _finish([_resize(s)])
    return v2.Compose([v2.ToImage(), _resize(s), BoxSafeRandAugment(num_ops=cfg.num_ops, magnitude=cfg.magnitude),
                       v2.ToDtype(torch.float32, scale=True),
                       v2.RandomErasing(p=cfg.erase_p, scale=(0.02, 0.25), value=0.5),
                       v2.ClampBoundingBoxes(), v2.Normalize(MEAN, STD)])


@register_augmentation("asl_cutout", settings=AslCutoutSettings)
def _asl_cutout(s: int, train: bool, cfg: AslCutoutSettings) -> v2.Compose:
    # torchvision's RandAugment; the authors use the `randaugment` package's
    geo = [_resize(s), Cutout(cfg.cutout_factor),
           BoxSafeRandAugment(num_ops=cfg.num_ops, magnitude=cfg.magnitude)] if train else [_resize(s)]
    return _finish(geo, normalise=False)


@register_augmentation("csra", settings=CsraSettings)
def _csra(s: int, train: bool, cfg: CsraSettings) -> v2.Compose:
    geo = [v2.RandomHorizontalFlip(), v2.RandomResizedCrop(s, scale=(cfg.min_scale, 1.0), antialias=True)]
    return _finish(geo if train else [_resize(s)], normalise=False)


def build_transform(preset: str, image_size: int, train: bool, **settings) -> v2.Compose:
    """A callable ``(image, boxes) -> (image [3, S, S] float, boxes)``; boxes may be a
    tv_tensors.BoundingBoxes. ``settings``: the preset's own (defaults otherwise)."""
    if preset not in AUGMENTATIONS:
        raise ValueError(f"unknown transform preset {preset!r}; choose one of "
                         f"{', '.join(AUGMENTATIONS.names())}")
    entry = AUGMENTATIONS.get(preset)
    if entry.config is None and settings:
        raise ValueError(f"transform preset {preset!r} has no settings; got {sorted(settings)}")
    cfg = entry.config.model_validate(settings) if entry.config is not None else None
    return entry.fn(image_size, train, cfg)
