"""Instance extraction (detector and boxes sources), the sharded cache, resume, torchrun.

Tiny on purpose: random detector weights, 32-64 px images, a few proposals.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import subprocess_env
from gmbench.data.base import LabelSet
from gmbench.instances import CacheError, default_cache_dir, open_cache, perturb_boxes
from gmbench.instances.boxes import BoxesConfig, BoxesSource
from gmbench.instances.extract import DetectorConfig, DetectorSource
from gmbench.instances.pipeline import run_extraction

SIZES = [(48, 64), (64, 40), (56, 56), (40, 64), (64, 48)]  # (w, h)
TOP_M = 4
DET = dict(weights="none", seed=3, min_size=32, max_size=64, rpn_pre_nms_top_n=30,
           rpn_post_nms_top_n=12)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Five small JPEGs with boxes, as a LabelSet."""
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths, boxes, blabels = [], [], []
    for i, (w, h) in enumerate(SIZES):
        arr = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        arr[h // 4: h // 2, w // 4: 3 * w // 4] = (200, 30, 30)
        p = d / f"{i:03d}.jpg"
        Image.fromarray(arr).save(p, quality=90)
        paths.append(p)
        k = i % 3 + 1
        x1 = rng.uniform(0, w / 2, k)
        y1 = rng.uniform(0, h / 2, k)
        boxes.append(np.stack([x1, y1, x1 + rng.uniform(4, w / 2, k), y1 + rng.uniform(4, h / 2, k)],
                              1).astype(np.float32))
        blabels.append(rng.integers(0, 3, k))
    targets = np.zeros((len(SIZES), 3), np.int8)
    return LabelSet(image_ids=[f"img{i}" for i in range(len(SIZES))], class_names=["a", "b", "c"],
                    targets=targets, image_paths=paths, boxes=boxes, box_labels=blabels,
                    sizes=np.array(SIZES))


@pytest.fixture(scope="module")
def detector():
    torch.set_num_threads(1)
    return DetectorSource(DetectorConfig(**DET), TOP_M, torch.device("cpu"))


@pytest.fixture(scope="module")
def det_cache(tiny, detector, tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "cache"
    res = run_extraction(tiny, out, detector, dataset="tiny", split="train", top_m=TOP_M,
                         shard_size=2, batch_size=2)
    assert res["complete"] and res["written"] == 3
    return out


def _images(tiny):
    from gmbench.instances.pipeline import decode_image
    return [decode_image(p) for p in tiny.image_paths]


# ----------------------------------------------------------------------------- perturb_boxes

def test_perturb_boxes_invariants():
    w, h = 50, 30
    boxes = np.array([[5, 5, 20, 25], [40, 0, 70, 40], [10, 10, 10, 10], [-5, 3, 8, 2]], np.float32)
    for seed in range(5):
        out = perturb_boxes(boxes, w, h, jitter=0.3, n_false=3, rng=np.random.default_rng(seed))
        assert out.shape == (7, 4) and out.dtype == np.float32
        assert (out[:, 0] >= 0).all() and (out[:, 1] >= 0).all()
        assert (out[:, 2] <= w).all() and (out[:, 3] <= h).all()
        assert (out[:, 2] - out[:, 0] >= 1).all() and (out[:, 3] - out[:, 1] >= 1).all()
        again = perturb_boxes(boxes, w, h, jitter=0.3, n_false=3, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(out, again)
    other = perturb_boxes(boxes, w, h, jitter=0.3, n_false=3, rng=np.random.default_rng(99))
    assert not np.array_equal(out, other)
    # jitter 0 keeps in-image boxes exactly; false boxes have sides in [0.1, 0.5] of the image
    same = perturb_boxes(boxes[:1], w, h, jitter=0.0, n_false=200, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(same[0], boxes[0])
    fw, fh = same[1:, 2] - same[1:, 0], same[1:, 3] - same[1:, 1]
    assert fw.min() >= 0.1 * w - 1e-4 and fw.max() <= 0.5 * w + 1e-4 and fh.max() <= 0.5 * h + 1e-4
    assert perturb_boxes(np.zeros((0, 4)), w, h, jitter=0.1, n_false=2,
                         rng=np.random.default_rng(0)).shape == (2, 4)
    # the largest jitter move is bounded by jitter * side
    big = np.array([[10, 10, 30, 20]], np.float32)
    moved = np.stack([perturb_boxes(big, 100, 100, jitter=0.1, n_false=0, rng=np.random.default_rng(s))[0]
                      for s in range(50)])
    d = np.abs(moved - big)
    assert d[:, [0, 2]].max() <= 2.0 + 1e-4 and d[:, [1, 3]].max() <= 1.0 + 1e-4 and d.max() > 0.5
    with pytest.raises(ValueError, match="shape"):
        perturb_boxes(np.zeros((3, 5)), w, h, jitter=0, n_false=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="jitter"):
        perturb_boxes(boxes, w, h, jitter=-1, n_false=0, rng=np.random.default_rng(0))


# ----------------------------------------------------------------------------- detector source

def test_detections_match_torchvision_and_features_are_the_predictors_input(tiny, detector):
    imgs = _images(tiny)[:2]
    rh = detector.model.roi_heads
    try:
        detector.cfg.unique_proposals = False  # then the output must be torchvision's own
        mine = detector(imgs, [0, 1])
        with torch.inference_mode():
            ref = detector.model([im.float() / 255 for im in imgs])
        for a, r in zip(mine, ref):
            assert len(a["scores"]) == TOP_M
            np.testing.assert_allclose(a["boxes_px"], r["boxes"].numpy(), atol=1e-4)
            np.testing.assert_array_equal(a["labels"], r["labels"].numpy())
            np.testing.assert_allclose(a["scores"], r["scores"].numpy(), rtol=1e-6)
        for unique in (False, True):
            detector.cfg.unique_proposals = unique
            for d in detector.detect(imgs):
                with torch.inference_mode():
                    probs = rh.box_predictor(d["feat"])[0].softmax(-1)
                # the stored feature, fed to the box predictor, gives the detection's score
                torch.testing.assert_close(probs[torch.arange(len(d["labels"])), d["labels"]],
                                           d["scores"], rtol=1e-5, atol=1e-6)
                if unique:  # one detection per proposal, labelled with its best class
                    assert len(set(d["rows"].tolist())) == len(d["rows"])
                    assert (probs[:, 1:].argmax(1) + 1 == d["labels"]).all()
    finally:
        detector.cfg.unique_proposals = True


def test_cache_contents_and_reader(tiny, detector, det_cache):
    cache = open_cache(det_cache, tiny.image_ids)
    assert len(cache) == len(tiny) and cache.feat_dim == 1024 and cache.top_m == TOP_M
    man = json.loads((det_cache / "manifest.json").read_text())
    assert man["image_ids"] == tiny.image_ids and man["n_instances"] == int(cache.counts.sum())
    assert [s["shard"] for s in man["shards"]] == [0, 1, 2]
    imgs = _images(tiny)  # same batches as the extraction (padding depends on the batch)
    direct = [r for j in range(0, 5, 2) for r in detector(imgs[j:j + 2], list(range(j, j + 2))[:len(imgs[j:j + 2])])]
    for i, (w, h) in enumerate(SIZES):
        r = cache[i]
        k = len(r["scores"])
        assert 1 <= k <= TOP_M and r["feat"].shape == (k, 1024) and r["feat"].dtype == np.float32
        assert r["image_size"] == (w, h) and np.isfinite(r["feat"]).all()
        px = r["boxes_px"]
        assert (px >= 0).all() and (px[:, [0, 2]] <= w).all() and (px[:, [1, 3]] <= h).all()
        assert (px[:, 2] >= px[:, 0]).all() and (px[:, 3] >= px[:, 1]).all()
        np.testing.assert_allclose(r["boxes"], px / [w, h, w, h], rtol=1e-6)
        assert (np.diff(r["scores"]) <= 0).all()
        # the cache holds what the source computed (features rounded to fp16)
        np.testing.assert_allclose(r["feat"], direct[i]["feat"], rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(px, direct[i]["boxes_px"], atol=1e-3)
        np.testing.assert_array_equal(r["labels"], direct[i]["labels"])
    assert cache.index_of("img3") == 3
    # memory-mapped, and workers reopen the maps instead of receiving copies
    assert isinstance(cache._arrays(0)["feat"], np.memmap)
    assert cache.__getstate__()["_maps"] == {}
    cache.verify()
    with pytest.raises(CacheError, match="differs from the dataset at image 2"):
        cache.validate(["img0", "img1", "imgX", "img3", "img4"])
    with pytest.raises(CacheError, match="has 5 images, the dataset has 4"):
        cache.validate(tiny.image_ids[:4])
    with pytest.raises(CacheError, match="split 'train', not 'test'"):
        cache.validate(tiny.image_ids, split="test")
    with pytest.raises(CacheError, match="manifest.json missing"):
        open_cache(det_cache.parent / "nothing-here")


# ----------------------------------------------------------------------------- boxes source

def test_boxes_source_uses_annotations_and_aligns_features(tiny):
    torch.set_num_threads(1)
    cfg = dict(depth=18, weights="none", min_size=32, max_size=64)
    plain = BoxesSource(BoxesConfig(**cfg), 3, "cpu", tiny)
    noisy = BoxesSource(BoxesConfig(**cfg, n_false=2), 10, "cpu", tiny)
    assert plain.feat_dim == 256  # ResNet-18 layer3
    imgs = _images(tiny)
    a, b = plain(imgs, range(5)), noisy(imgs, range(5))
    for i in range(5):
        ann = tiny.boxes[i]
        order = np.argsort(-(ann[:, 2] - ann[:, 0]) * (ann[:, 3] - ann[:, 1]), kind="stable")
        k = len(ann)
        np.testing.assert_allclose(a[i]["boxes_px"], ann[order][:3], atol=1e-4)
        np.testing.assert_array_equal(a[i]["labels"], tiny.box_labels[i][order][:3])
        assert len(b[i]["boxes_px"]) == k + 2 and (b[i]["labels"][k:] == -1).all()
        assert (b[i]["scores"][:k] == 1).all() and (b[i]["scores"][k:] == 0).all()
        # a box's feature depends on that box only: extra boxes do not shift the rows
        np.testing.assert_allclose(b[i]["feat"][:len(a[i]["feat"])], a[i]["feat"], rtol=1e-5, atol=1e-5)
        assert np.isfinite(b[i]["feat"]).all()
        assert not np.allclose(b[i]["feat"][0], b[i]["feat"][-1])


# ----------------------------------------------------------------------------- resume

def _arrays(out: Path):
    c = open_cache(out)
    return [c[i] for i in range(len(c))]


def test_resume_after_interrupted_shards(tiny, tmp_path):
    torch.set_num_threads(1)
    src = BoxesSource(BoxesConfig(depth=18, weights="none", min_size=32, max_size=64,
                                  jitter=0.1, n_false=1), TOP_M, "cpu", tiny)
    kw = dict(dataset="tiny", split="train", top_m=TOP_M, shard_size=2, batch_size=2)
    ref = tmp_path / "ref"
    run_extraction(tiny, ref, src, **kw)
    out = tmp_path / "out"
    res = run_extraction(tiny, out, src, max_shards=2, **kw)
    assert not res["complete"] and res["written"] == 2
    with pytest.raises(CacheError, match="resume"):
        open_cache(out)
    sd = out / "shards"
    # an interrupted run: a stray temp file, shard 2 without commit record, shard 1 corrupt
    (sd / ".tmp-shard-00002.feat.npy.abc123").write_bytes(b"partial")
    np.save(sd / "shard-00002.feat.npy", np.zeros((1, 256), np.float16))
    feat1 = sd / "shard-00001.feat.npy"
    feat1.write_bytes(feat1.read_bytes()[:-8] + b"\0" * 8)
    stamp0 = (sd / "shard-00000.feat.npy").stat().st_mtime_ns
    logs = []
    res = run_extraction(tiny, out, src, log=logs.append, **kw)
    assert res["complete"] and res["written"] == 2 and res["skipped"] == 1
    assert (sd / "shard-00000.feat.npy").stat().st_mtime_ns == stamp0  # not redone
    assert any("shard 1" in m and "checksum" in m for m in logs)
    assert not list(sd.glob(".tmp-*"))
    for x, y in zip(_arrays(ref), _arrays(out)):
        for key in ("feat", "boxes_px", "labels", "scores"):
            np.testing.assert_array_equal(x[key], y[key])
    open_cache(out).verify()
    res = run_extraction(tiny, out, src, **kw)  # already complete: nothing to do
    assert res["complete"] and res["written"] == 0
    with pytest.raises(CacheError, match="other settings.*top_m"):
        run_extraction(tiny, out, src, **dict(kw, top_m=2))


# ----------------------------------------------------------------------------- torchrun

def _cli(out, extra=()):
    return ["extract", "--dataset", "synthetic", "--split", "train", "-o", "n_train=5",
            "-o", "n_test=1", "-o", "resolution=48", "--weights", "none", "--seed", "3",
            "--min-size", "32", "--max-size", "64", "--rpn-post-nms-top-n", "12",
            "--top-m", str(TOP_M), "--shard-size", "1", "--batch-size", "1",
            "--num-workers", "0", "--out", str(out), *extra]


def test_two_processes_equal_one_process(tmp_path):
    from gmbench.cli import main
    env = subprocess_env(OMP_NUM_THREADS="1")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_cli(one)) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
           "--nproc_per_node=2", "-m", "gmbench", *_cli(two)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (one, two))
    assert m2["world_size"] == 2 and m1["world_size"] == 1
    assert m1["image_ids"] == m2["image_ids"] and m1["identity"] == m2["identity"]
    assert [s["shard"] for s in m2["shards"]] == list(range(5))  # each once, in order
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]
    for x, y in zip(_arrays(one), _arrays(two)):
        for key in ("feat", "boxes_px", "labels", "scores"):
            np.testing.assert_array_equal(x[key], y[key])


def test_cli_reports_bad_weights_file(tmp_path, capsys):
    from gmbench.cli import main
    rc = main(_cli(tmp_path / "c")[:-2] + ["--out", str(tmp_path / "c"), "--weights",
                                          str(tmp_path / "missing.pth")])
    assert rc == 2 and "missing.pth does not exist" in capsys.readouterr().err
    assert default_cache_dir(tmp_path, "train", "boxes", 10) == \
        tmp_path / "instances" / "train-boxes-m10"
