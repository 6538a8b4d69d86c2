"""The authors' augmentation presets (issue 25 items 4 and 6): ``asl_cutout`` (resize →
Cutout, always, half of each side, random fill → RandAugment → [0, 1]) and ``csra``
(flip + RandomResizedCrop(0.7–1) on [0, 1]); both seeded only through python's and
torch's RNG, so ``sample_rng`` makes them reproducible per (seed, epoch, index)."""
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from gmbench.data.dataset import sample_rng
from gmbench.data.transforms import Cutout, build_transform

COLOUR = (7, 11, 13)


def _constant(h, w):
    return Image.fromarray(np.full((h, w, 3), COLOUR, dtype=np.uint8))


def _box_of(changed: torch.Tensor):
    """(top, bottom, left, right) of the True pixels of [H, W], checking they form one
    filled rectangle."""
    ys, xs = torch.nonzero(changed, as_tuple=True)
    top, bottom, left, right = ys.min().item(), ys.max().item() + 1, xs.min().item(), xs.max().item() + 1
    assert changed.sum().item() == (bottom - top) * (right - left)
    return top, bottom, left, right


@pytest.mark.parametrize("h, w", [(40, 60), (33, 21)])
def test_cutout_is_one_box_of_half_of_each_side_clipped_to_the_image(h, w):
    img = tv_tensors.Image(torch.tensor(COLOUR, dtype=torch.uint8)[:, None, None].expand(3, h, w).clone())
    bh, bw = -(-h // 2), -(-w // 2)  # half of each side, a half pixel rounded up
    whole = 0
    for seed in range(40):
        random.seed(seed)
        out = Cutout(0.5)(img)
        changed = (out != img).any(0)
        if not changed.any():  # the random fill drew the image's own colour
            continue
        top, bottom, left, right = _box_of(changed)
        fill = out[:, top, left]
        assert (out[:, top:bottom, left:right] == fill[:, None, None]).all()  # one colour
        assert bottom - top <= bh and right - left <= bw
        assert bottom - top == bh or top == 0 or bottom == h  # cut only by the image border
        assert right - left == bw or left == 0 or right == w
        whole += (bottom - top, right - left) == (bh, bw)
    assert whole >= 5  # most centres leave the box whole


def test_asl_cutout_preset_is_resize_cutout_randaugment_without_normalisation():
    """num_ops 0 leaves RandAugment out: what remains is the resize and the Cutout box, on
    [0, 1] values (the image's own colour / 255 outside the box)."""
    tf = build_transform("asl_cutout", 64, True, num_ops=0)
    with sample_rng(0, 0, 3):
        out = tf(_constant(100, 80))
    base = torch.tensor(COLOUR, dtype=torch.float32)[:, None, None] / 255
    changed = (out - base).abs().amax(0) > 1e-6
    top, bottom, left, right = _box_of(changed)
    assert bottom - top <= 32 and right - left <= 32
    assert (bottom - top == 32 or top == 0 or bottom == 64) and (right - left == 32 or left == 0 or right == 64)
    assert out.min() >= 0 and out.max() <= 1
    test = build_transform("asl_cutout", 64, False)(_constant(100, 80))
    assert torch.allclose(test, base.expand(3, 64, 64), atol=1e-6)  # resize only, [0, 1]


def test_csra_preset_flips_and_crops_on_unit_range_inputs():
    arr = np.zeros((60, 60, 3), dtype=np.uint8)
    arr[:, :30] = 255  # left half white
    img = Image.fromarray(arr)
    outs = []
    for i in range(12):
        with sample_rng(1, 0, i):
            outs.append(build_transform("csra", 32, True)(img))
    for o in outs:
        assert o.shape == (3, 32, 32) and o.min() >= 0 and o.max() <= 1
        # RandomResizedCrop keeps at least 70 % of the area: both halves stay visible
        assert o[:, :, 0].mean() != o[:, :, -1].mean()
    left_white = [o[:, :, 0].mean() > o[:, :, -1].mean() for o in outs]
    assert any(left_white) and not all(left_white)  # flipped in some draws only
    test = build_transform("csra", 32, False)(img)
    assert test[:, :, :15].min() == 1 and test[:, :, 17:].max() == 0  # plain resize, no norm


@pytest.mark.parametrize("preset", ["asl_cutout", "csra"])
def test_two_builds_with_one_seed_give_identical_tensors(preset):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))

    def draw(index, numpy_seed):
        np.random.seed(numpy_seed)  # numpy's global RNG must not matter: sample_rng leaves it
        with sample_rng(5, 2, index):
            return build_transform(preset, 48, True)(img)

    a, b = draw(7, 0), draw(7, 123)
    assert torch.equal(a, b)
    assert not torch.equal(a, draw(8, 0))
