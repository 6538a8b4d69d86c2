"""model.features=views (issue 24, item 7): K augmented views per training image cached once,
one view read per epoch; the test split one un-augmented view."""
import json

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from gmbench.cli import main
from gmbench.data import data_config, get_spec
from gmbench.data.transforms import MEAN, STD
from gmbench.instances import open_cache
from gmbench.instances.extract import DetectorConfig
from gmbench.instances.online import OnlineDetector
from gmbench.instances.views import ViewsCache, view_of

OPTS = {"n_train": 6, "n_test": 4, "num_classes": 3, "resolution": 64, "image_size": 48,
        "train_transform": "mlgcn", "test_transform": "plain"}
DET = ["--weights", "none", "--min-size", "64", "--max-size", "64", "--top-m", "5"]
K = 3


def _args(split, views, out, **extra):
    opts = [x for k, v in {**OPTS, **extra}.items() for x in ("-o", f"{k}={v}")]
    return ["extract", "--dataset", "synthetic", *opts, "--split", split, "--views", str(views),
            *DET, "--out", str(out), "--no-progress", "--num-workers", "0"]


def _labels(split):
    cfg = data_config("synthetic", **OPTS)
    spec = get_spec("synthetic")
    return spec.read_labels(spec.prepare_root(cfg), split, cfg)


@pytest.fixture(scope="module")
def train_views(tmp_path_factory):
    out = tmp_path_factory.mktemp("views") / "train"
    assert main(_args("train", K, out)) == 0
    return out


@pytest.fixture(scope="module")
def detector():
    # the same frozen detector the CLI built: random init (seed 0), resized to 64 px
    return OnlineDetector(DetectorConfig(weights="none", seed=0, min_size=64, max_size=64), 5)


def _apply(img, g, size):
    """The view that geometry g (a_x, b_x, a_y, b_y, w, h) records, made by hand from the
    original image: crop the region the view shows, resize, flip if a_x < 0, normalise."""
    ax, bx, ay, by = (float(x) for x in g[:4])
    xs, ys = sorted([-bx / ax, (size - bx) / ax]), sorted([-by / ay, (size - by) / ay])
    left, top = round(xs[0]), round(ys[0])
    w, h = round(xs[1]) - left, round(ys[1]) - top
    x = F.crop(v2.functional.to_image(img), top, left, h, w)
    x = F.resize(x, [size, size], antialias=True)
    if ax < 0:
        x = F.horizontal_flip(x)
    return F.normalize(F.to_dtype(x, torch.float32, scale=True), MEAN, STD)


def test_views_are_k_distinct_detections_of_the_recorded_augmented_views(train_views, detector):
    from PIL import Image
    labels = _labels("train")
    cache = open_cache(train_views)
    assert len(cache) == K * len(labels)
    man = json.loads((train_views / "manifest.json").read_text())
    assert man["settings"]["views"] == K and man["settings"]["augmentation"]["transform"] == "mlgcn"
    ViewsCache(cache).validate(labels.image_ids, dataset="synthetic", split="train")
    for i, path in enumerate(labels.image_paths):
        geos = [tuple(cache.geometry(i * K + v)) for v in range(K)]
        assert len(set(geos)) == K, f"image {i}: views are not distinct: {geos}"
        with Image.open(path) as im:
            img = im.convert("RGB")
        views = torch.stack([_apply(img, g, 48) for g in geos])
        for v, d in enumerate(detector.detections(views)):
            got = cache[i * K + v]
            assert len(got["boxes"]) == len(d["boxes"]) > 0
            np.testing.assert_allclose(got["boxes"], d["boxes"].numpy(), atol=1e-5)
            np.testing.assert_allclose(got["feat"], d["feat"].numpy(), rtol=2e-3, atol=2e-3)
            np.testing.assert_array_equal(got["labels"], d["labels"].numpy())


def test_epoch_to_view_is_deterministic_and_covers_every_view():
    for seed in (0, 1):
        for i in range(20):
            for cycle in range(3):
                seen = [view_of(seed, cycle * K + e, i, K) for e in range(K)]
                assert sorted(seen) == list(range(K))  # each view once per cycle of K epochs
                assert seen == [view_of(seed, cycle * K + e, i, K) for e in range(K)]
    orders = {tuple(view_of(0, e, i, 4) for e in range(4)) for i in range(30)}
    assert len(orders) > 5  # the order differs between images
    assert view_of(0, 5, 3, 1) == 0
    assert [view_of(0, e, 0, 4) for e in range(8)] != [view_of(1, e, 0, 4) for e in range(8)] or \
        [view_of(0, e, 1, 4) for e in range(8)] != [view_of(1, e, 1, 4) for e in range(8)]


def test_a_changed_k_or_transform_is_refused_or_goes_to_another_folder(train_views, tmp_path):
    from types import SimpleNamespace

    from gmbench.instances.views import augmentation, views_dir
    assert main(_args("train", K + 1, train_views)) == 1  # same folder, other K: refused
    assert main(_args("train", K, train_views, train_transform="plain")) == 1  # other transform
    assert len(open_cache(train_views)) == K * 6  # the old cache is untouched
    inst = SimpleNamespace(views=K, view_seed=0, detector_input="squashed")
    det = {"weights": "none"}
    cfg = data_config("synthetic", **OPTS)
    base = views_dir(tmp_path, "train", True, augmentation(cfg, True, inst), det, 5)
    other_k = views_dir(tmp_path, "train", True, augmentation(cfg, True, SimpleNamespace(
        views=K + 1, view_seed=0, detector_input="squashed")), det, 5)
    plain = data_config("synthetic", **dict(OPTS, train_transform="plain"))
    other_tf = views_dir(tmp_path, "train", True, augmentation(plain, True, inst), det, 5)
    assert len({base, other_k, other_tf}) == 3


def test_the_test_split_is_one_unaugmented_view(tmp_path, detector):
    from PIL import Image
    out = tmp_path / "test"
    assert main(_args("test", 2, out)) == 2  # only one view of a split other than train
    assert main(_args("test", 1, out)) == 0
    labels = _labels("test")
    cache = open_cache(out)
    assert len(cache) == len(labels)
    tf = v2.Compose([v2.ToImage(), v2.Resize((48, 48), antialias=True),
                     v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    for i, path in enumerate(labels.image_paths):
        g = cache.geometry(i)
        np.testing.assert_allclose(g[:4], [48 / 64, 0, 48 / 64, 0], atol=1e-4)  # resize, no crop/flip
        with Image.open(path) as im:
            d = detector.detections(tf(im.convert("RGB"))[None])[0]
        np.testing.assert_allclose(cache[i]["boxes"], d["boxes"].numpy(), atol=1e-5)


def test_a_runner_row_with_features_views_extracts_trains_and_records_the_protocol(tmp_path):
    import yaml

    from gmbench.data.dataset import ImageDataset
    from gmbench.instances.views import open_views
    from gmbench.runner import load_suite, plan
    row = {"label": "GM-MLIC views", "method": "gm_mlic", "dataset": "synthetic",
           "set": {"model.features": "views", "model.views": 2, "model.feat_dim": 1024,
                   "model.detector_weights": "none", "model.detector_min_size": 64,
                   "model.detector_max_size": 64, "model.top_m": 5, "model.enc_dim": 8,
                   "model.dims": [8, 8], "model.backend": "dense"}}
    suite = tmp_path / "views.yaml"
    suite.write_text(yaml.safe_dump({"name": "views", "seeds": [0], "rows": [row], "defaults": {
        "data": {**OPTS, "num_workers": 0}, "train": {"epochs": 2, "batch_size": 4, "num_threads": 1}}}))
    out = tmp_path / "out"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--format", "csv"]) == 0
    rec = json.loads((out / "views" / "runs.jsonl").read_text().splitlines()[0])
    p = rec["protocol"]
    assert p["features"] == "views" and p["views"] == 2 and p["instance_source"] == "detector"
    assert not p["test_annotations_used"] and p["detector"]["weights"] == "random-init:seed=0"
    assert np.isfinite(rec["metrics"]["mAP"]) and len(rec["train"]["history"]) == 2
    train_dir, test_dir = rec["model_record"]["instance_caches"]
    assert "train-views2-m5-" in train_dir and "test-views1-m5-" in test_dir
    # what the run read: epoch e gives image i its view view_of(seed, e, i, 2)
    from gmbench.data import load_splits
    cfg = plan(load_suite(str(suite)), {})[0].cfg
    tr, te = open_views(cfg, load_splits(cfg.data)[0])
    assert (tr.views, te.views, len(te)) == (2, 1, OPTS["n_test"])
    ds = ImageDataset(_labels("train"), None, instance_source=tr, load_image=False, with_boxes=True)
    for i in range(OPTS["n_train"]):
        got = [ds[(i, e)]["inst_feat"] for e in range(2)]
        want = [tr.cache[i * 2 + view_of(0, e, i, 2)]["feat"] for e in range(2)]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g.numpy(), w)
        assert not torch.equal(got[0], got[1])  # two epochs, two different views


def test_dry_run_costs_the_views_extraction_once_per_cache():
    from types import SimpleNamespace

    from gmbench import config as Cfg
    from gmbench.launch.cost import describe_cost, run_cost
    cfg = Cfg.validate(Cfg.compose("gm_mlic", "coco2014", {},
                                   {"model": {"features": "views", "views": 4}, "train": {"epochs": 2}}))
    c = run_cost(cfg)
    # the head as cache mode each epoch; K × 82,081 train + 40,137 test detector passes once
    assert c["detector"] == 0 and c["extraction"] == 4 * 82081 + 40137
    assert c["gpu_h"] == pytest.approx((2 * 82081 / 353 + 2 * 40137 / 341) / 3600)
    assert c["extraction_h"] == pytest.approx((4 * 82081 + 40137) / 100 / 3600)
    runs = [SimpleNamespace(cfg=cfg, run_id=str(s), seed=s, row=SimpleNamespace(label="GM-MLIC"))
            for s in range(3)]
    text = describe_cost(runs)
    assert text.count("(once, counted here)") == 1 and text.count("(shared, counted above)") == 2
    total = 3 * c["gpu_h"] + c["extraction_h"]
    assert f"{4 * 82081 + 40137:,} detector passes; ≈ {total:.1f} GPU-hours" in text
