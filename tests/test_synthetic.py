"""The embedded synthetic dataset: deterministic, COCO-form, with planted structure."""
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from gmbench.data import read_labels
from gmbench.data.synthetic import SyntheticConfig, _World, generate_split, render_image

SMALL = dict(num_classes=8, n_train=120, n_test=20, resolution=48, seed=3)


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(np.asarray(Image.open(p)).tobytes() if p.suffix == ".jpg" else p.read_bytes())
    return h.hexdigest()


def test_deterministic_from_seed(tmp_path):
    a = read_labels("synthetic", tmp_path / "a", "train", **SMALL)
    b = read_labels("synthetic", tmp_path / "b", "train", **SMALL)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert a.image_ids == b.image_ids and np.array_equal(a.targets, b.targets)
    c = read_labels("synthetic", tmp_path / "c", "train", **{**SMALL, "seed": 4})
    assert not np.array_equal(a.targets, c.targets)


def test_coco_form_on_disk(tmp_path):
    labels = read_labels("synthetic", tmp_path, "test", **SMALL)
    doc = json.loads((tmp_path / "annotations" / "instances_test.json").read_text())
    assert {"images", "annotations", "categories"} <= set(doc)
    assert len(doc["images"]) == len(labels) == SMALL["n_test"]
    assert labels.class_names == [c["name"] for c in doc["categories"]]
    for i, path in enumerate(labels.image_paths):
        assert Image.open(path).size == (48, 48)
        # image-level labels are exactly the classes of the boxes
        assert set(np.flatnonzero(labels.targets[i])) == set(labels.box_labels[i].tolist())
        b = labels.boxes[i]
        assert np.all(b[:, 2] > b[:, 0]) and np.all(b >= -1e-3) and np.all(b <= 48 + 1e-3)


def test_no_half_written_split(tmp_path, monkeypatch):
    cfg = SyntheticConfig(**SMALL)
    calls = {"n": 0}
    real = Image.Image.save

    def failing_save(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # as if killed mid-generation
        return real(self, *a, **k)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        generate_split(cfg, tmp_path, "test")
    assert not (tmp_path / "annotations" / "instances_test.json").exists()
    assert not (tmp_path / "test").exists()
    monkeypatch.setattr(Image.Image, "save", real)
    generate_split(cfg, tmp_path, "test")
    assert len(list((tmp_path / "test").glob("*.jpg"))) == SMALL["n_test"]


def test_planted_structure():
    cfg = SyntheticConfig(num_classes=10, n_train=400, resolution=64, seed=0)
    world = _World(cfg)
    objs = [render_image(world, cfg, 1, i)[1] for i in range(400)]
    y = np.zeros((400, 10), dtype=int)
    for i, o in enumerate(objs):
        for c, _ in o:
            y[i, c] = 1
    # co-occurrence: a scene's two first core classes co-occur above independence
    a, b = world.core[0][:2]
    p_ab = np.mean(y[:, a] & y[:, b])
    assert p_ab > 1.3 * y[:, a].mean() * y[:, b].mean()
    # spatial relation: the second core class sits above the first when both are present
    above = []
    for o in objs:
        boxes = dict(o)
        if a in boxes and b in boxes:
            above.append(boxes[b][3] <= boxes[a][1] + 0.06 * 64)
    assert len(above) > 10 and np.mean(above) > 0.9
    # sizes: some classes are small (< 20% of the side), some large (> 20%)
    sides = {c: [] for c in range(10)}
    for o in objs:
        for c, (x1, _, x2, _) in o:
            sides[c].append((x2 - x1) / 64)
    means = np.array([np.mean(v) for v in sides.values() if v])
    assert means.min() < 0.2 < means.max()
