"""Where a transformed image came from: the per-axis affine map from the original image's
pixels to the transformed image's pixels, read off the transform itself.

Every preset (crop, resize, flip; photometric ops and Cutout leave geometry alone) maps
each axis affinely: ``x_out = a_x · x_orig + b_x`` (``a_x < 0`` for a flip). The map is
measured, not re-derived per preset: the transform is called once on the image together
with one 1-pixel strip per column and per row of the original, so the random draws that
move the image move the strips; strips outside the crop are clipped away, and two
surviving whole strips per axis fix the affine. GM-MLIC's online detector reads it to see
the crop at its own aspect ratio (``model.detector_input: crop``).
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch
from torchvision import tv_tensors

# geometry vector layout: [a_x, b_x, a_y, b_y, orig_w, orig_h]
GEOMETRY_DIM = 6


def _axis(lo: torch.Tensor, hi: torch.Tensor) -> Tuple[float, float]:
    """(a, b) with out = a · orig + b, from the transformed strips [lo, hi] of the original
    pixel strips [i, i + 1], i = 0..n-1 (clipped ones shrink or vanish)."""
    width = hi - lo
    full = width.max()
    if not full > 0:
        raise ValueError("the transform left no pixel of the original image in view")
    ok = torch.nonzero(width > 0.999 * full).flatten()
    i, j = int(ok[0]), int(ok[-1])
    ci, cj = float(lo[i] + hi[i]) / 2, float(lo[j] + hi[j]) / 2
    if i == j:  # one whole strip in view: scale from its width, direction unknown (assume none)
        a = float(full)
    else:
        a = (cj - ci) / (j - i)
    return a, ci - a * (i + 0.5)


def transform_with_geometry(transform: Callable, img) -> Tuple[torch.Tensor, torch.Tensor]:
    """PIL image → (transform's image [3, H, W], geometry float32 [6] = a_x, b_x, a_y, b_y,
    orig_w, orig_h): output pixel x = a_x · original pixel x + b_x (y likewise)."""
    w, h = img.size
    xs = torch.arange(w, dtype=torch.float32)
    ys = torch.arange(h, dtype=torch.float32)
    strips = torch.cat([torch.stack([xs, torch.zeros(w), xs + 1, torch.full((w,), float(h))], 1),
                        torch.stack([torch.zeros(h), ys, torch.full((h,), float(w)), ys + 1], 1)])
    bb = tv_tensors.BoundingBoxes(strips, format="XYXY", canvas_size=(h, w))
    image, out = transform(img, bb)
    out = out.as_subclass(torch.Tensor)
    # a flip turns a strip [lo, hi] into [W - hi, W - lo]: boxes stay ordered, centres move
    ax, bx = _axis(out[:w, 0], out[:w, 2])
    ay, by = _axis(out[w:, 1], out[w:, 3])
    return image, torch.tensor([ax, bx, ay, by, w, h], dtype=torch.float32)


class GeometryTransform:
    """Wraps a transform ``(image[, boxes])``; ``with_geometry(img)`` also returns the map
    (the dataset then puts it in ``item["geometry"]``). Called plainly it is the wrapped
    transform."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, *inputs):
        return self.transform(*inputs)

    def with_geometry(self, img) -> Tuple[torch.Tensor, torch.Tensor]:
        return transform_with_geometry(self.transform, img)

    def __repr__(self) -> str:
        return f"GeometryTransform({self.transform!r})"
