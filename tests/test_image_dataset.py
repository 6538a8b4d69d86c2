"""ImageDataset: bad image files fail fast (naming the file) or are skipped and
counted; VOC difficult labels map as configured; boxes are padded with a mask."""
import numpy as np
import pytest
import torch
from PIL import Image

from gmbench.data.base import LabelSet
from gmbench.data.dataset import BadImageError, ImageDataset, collate, map_difficult
from gmbench.data.transforms import build_transform


def labelset(tmp_path, n=4):
    paths = []
    for i in range(n):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(p)
        paths.append(p)
    t = np.array([[1, 0], [0, -1], [1, 1], [0, 0]], dtype=np.int8)[:n]
    boxes = [np.array([[0, 0, 10, 10]] * (i % 3), np.float32).reshape(-1, 4) for i in range(n)]
    return LabelSet([str(i) for i in range(n)], ["a", "b"], t, paths, boxes=boxes,
                    box_labels=[np.zeros(len(b), np.int64) for b in boxes])


def test_difficult_mapping():
    t = np.array([[1, -1, 0]], np.int8)
    assert map_difficult(t, "positive").tolist() == [[1, 1, 0]]
    assert map_difficult(t, "negative").tolist() == [[1, 0, 0]]
    assert map_difficult(t, "ignore").tolist() == [[1, -1, 0]]


def test_bad_images_fail_fast_or_are_skipped(tmp_path):
    ls = labelset(tmp_path)
    data = ls.image_paths[1].read_bytes()
    ls.image_paths[1].write_bytes(data[: len(data) // 2])  # truncated JPEG
    ls.image_paths[2].unlink()                              # missing file
    tf = build_transform("plain", 16, False)
    strict = ImageDataset(ls, tf)
    with pytest.raises(BadImageError, match="1.jpg"):
        strict[1]
    with pytest.raises(BadImageError, match="2.jpg.*data check"):
        strict[2]
    lenient = ImageDataset(ls, tf, skip_bad_images=True, difficult="negative")
    batch = collate([lenient[i] for i in range(4)])
    assert batch["n_skipped"] == 2 and batch["index"].tolist() == [0, 3]
    assert batch["image"].shape == (2, 3, 16, 16)


def test_target_raw_keeps_ignored_labels(tmp_path):
    ds = ImageDataset(labelset(tmp_path), build_transform("plain", 16, False), difficult="positive")
    item = ds[1]
    assert item["target"].tolist() == [0, 1] and item["target_raw"].tolist() == [0, -1]


def test_boxes_are_normalised_and_padded(tmp_path):
    ds = ImageDataset(labelset(tmp_path), build_transform("plain", 16, False), with_boxes=True)
    batch = collate([ds[i] for i in range(3)])
    assert batch["boxes"].shape == (3, 2, 4) and batch["box_mask"].tolist() == [
        [False, False], [True, False], [True, True]]
    assert torch.allclose(batch["boxes"][1, 0], torch.tensor([0, 0, 10 / 30, 10 / 20]), atol=1e-5)
