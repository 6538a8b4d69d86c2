"""Transform presets: output size, and boxes that follow crops, resizes and flips."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from gmbench.data.transforms import MEAN, STD, build_transform


def image_and_box(w=120, h=90):
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[20:50, 10:40] = 255  # a white square at x 10..40, y 20..50
    box = tv_tensors.BoundingBoxes(torch.tensor([[10.0, 20.0, 40.0, 50.0]]), format="XYXY",
                                   canvas_size=(h, w))
    return Image.fromarray(arr), box


@pytest.mark.parametrize("preset", ["mlgcn", "ssgrl", "plain", "asl"])
@pytest.mark.parametrize("train", [True, False])
def test_output_size_and_box_tracks_object(preset, train):
    torch.manual_seed(0)
    for _ in range(10):
        img, box = image_and_box()
        out, b = build_transform(preset, 64, train)(img, box)
        assert out.shape == (3, 64, 64) and out.dtype == torch.float32
        x1, y1, x2, y2 = b[0].tolist()
        assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 64
        if x2 - x1 >= 4 and y2 - y1 >= 4:
            # the white object's pixels sit inside the transformed box
            white = (out * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]).mean(0) > 0.9
            ys, xs = torch.nonzero(white, as_tuple=True)
            if preset == "asl" and not len(xs):
                continue  # Solarize / Cutout may leave no white pixel; the box is then unchecked
            assert xs.min() >= x1 - 2 and xs.max() <= x2 + 1 and ys.min() >= y1 - 2 and ys.max() <= y2 + 1


def test_plain_test_transform_is_a_resize():
    img, box = image_and_box(w=128, h=64)
    _, b = build_transform("plain", 64, False)(img, box)
    assert b[0].tolist() == pytest.approx([5.0, 20.0, 20.0, 50.0])


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown transform preset .fancy.*mlgcn"):
        build_transform("fancy", 64, True)


def test_asl_preset_randaugments_and_cuts_out():
    """Without boxes the full RandAugment (geometric ops too) and Cutout run: outputs vary
    between draws; with boxes only photometric ops run, so the box is the resized one."""
    img, box = image_and_box(w=64, h=64)
    tf = build_transform("asl", 64, True)
    torch.manual_seed(0)
    outs = [tf(img) for _ in range(6)]
    assert len({round(float(o.sum()), 3) for o in outs}) > 1
    for _ in range(10):
        _, b = tf(img, box)
        assert b[0].tolist() == pytest.approx([10.0, 20.0, 40.0, 50.0])
