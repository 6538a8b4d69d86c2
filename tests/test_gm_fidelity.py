"""GM-MLIC as the paper ran it (issue 25, items 8-10): the online detector's view and its
geometry, the runner's online datasets, best-epoch tracking, and which rows may carry a
``detector:`` block."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from gmbench import config as C
from gmbench import engine, runner
from gmbench.cli import main
from gmbench.data import read_labels
from gmbench.data.dataset import ImageDataset
from gmbench.data.geometry import transform_with_geometry
from gmbench.data.transforms import MEAN, STD, build_transform
from gmbench.instances import source
from gmbench.instances.extract import DetectorConfig
from gmbench.instances.online import OnlineDetector, view_size
from gmbench.registry import METHODS

from conftest import tiny_sets
from test_recipes_engine import CrashingNet

ONLINE = {"model.features": "online", "model.feat_dim": 1024, "model.detector_weights": "none",
          "model.detector_min_size": 64, "model.detector_max_size": 96, "model.top_m": 5,
          "model.enc_dim": 8, "model.dims": "[8,6]", "model.backend": "dense"}


def _cfg(method="gm_mlic", **over):
    return C.validate(C.compose(method, "synthetic", C.parse_set(tiny_sets(**over))))


# -- item 8: the view's geometry and the detector's input ----------------------------------

def test_geometry_is_the_affine_map_of_crop_resize_flip():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    tf = v2.Compose([v2.ToImage(), v2.CenterCrop((40, 60)), v2.Resize((30, 30), antialias=True),
                     v2.RandomHorizontalFlip(p=1.0), v2.ToDtype(torch.float32, scale=True)])
    image, g = transform_with_geometry(tf, img)
    # by hand: crop top 12, left 18; x: 60 → 30 px then mirrored, y: 40 → 30 px
    np.testing.assert_allclose(g.numpy(), [-0.5, 0.5 * 18 + 30, 0.75, -0.75 * 12, 96, 64], atol=1e-5)
    plain = v2.Compose([v2.ToImage(), v2.Resize((32, 32), antialias=True), v2.ToDtype(torch.float32, scale=True)])
    np.testing.assert_allclose(transform_with_geometry(plain, img)[1].numpy(), [1 / 3, 0, 0.5, 0, 96, 64],
                               atol=1e-5)
    assert torch.equal(image, tf(img))  # the image is the transform's own output


def test_view_size_follows_the_detectors_resize_rule():
    # 96 × 64 original squashed to 32²: shorter side 64 → 800, longer 1200 (under 1333)
    g = torch.tensor([[32 / 96, 0, 32 / 64, 0, 96, 64], [-32 / 40, 32, 32 / 80, 0, 96, 64]])
    # 40 × 80 region: the cap binds, 1333 / 80 = 16.66; width 666.5 rounds to even
    assert view_size(g, 32, 32, 800, 1333) == [(800, 1200), (1333, 666)]


def _fewer_proposals(det_model, n=50):
    """Random-init R50-FPN on CPU: 1000 proposals per image cost most of a test's time."""
    det_model.rpn._pre_nms_top_n["testing"] = 2 * n
    det_model.rpn._post_nms_top_n["testing"] = n


def test_crop_view_shows_the_detector_the_original_aspect():
    cfg = DetectorConfig(weights="none", min_size=64, max_size=200, rpn_pre_nms_top_n=100,
                         rpn_post_nms_top_n=50, unique_proposals=False)  # = torchvision's output
    sq = OnlineDetector(cfg, 5, "squashed")
    crop = copy.copy(sq)  # the same random weights
    crop.view = "crop"
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(2, 3, 48, 72, generator=g)  # two 3:2 views, squashed to 32² for the model
    small = F.interpolate(raw, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    norm = (small - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    geo = torch.tensor([[32 / 72, 0, 32 / 48, 0, 72, 48]] * 2)
    seen = []
    hook = sq.model.backbone.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape)))
    try:
        boxes, mask, _ = crop(norm, geo)
        sq(norm)
    finally:
        hook.remove()
    assert seen[0][-2:] == (64, 96) and seen[1][-2:] == (64, 64)  # own aspect vs square
    # reference: the stock detector on the un-squashed view, its boxes normalised by hand
    view = F.interpolate(small[:1], size=(64, 96), mode="bilinear", antialias=True, align_corners=False)
    ref = sq.model(list(view))[0]["boxes"] / torch.tensor([96.0, 64, 96, 64])
    k = int(mask[0].sum())
    assert k > 0
    np.testing.assert_allclose(boxes[0, :k].numpy(), ref[:k].numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="geometry"):
        crop(norm)


# -- item 10a: the runner builds online datasets with the train / test presets -----------

@pytest.fixture(scope="module")
def online_datasets():
    cfg = _cfg(**ONLINE, **{"model.detector_input": "crop", "data.train_transform": "mlgcn",
                            "data.test_transform": "plain", "data.width": 48, "data.n_train": 8,
                            "data.n_test": 8})
    root, train, test, info = runner._DataCache().get(cfg)
    model = METHODS.get("gm_mlic").fn(cfg.model, info)
    tr, te = runner.build_datasets(cfg, model, train, test, root)
    _fewer_proposals(model._extractor.model)
    return cfg, model, tr, te, test


def test_runner_online_training_set_is_augmented_and_test_set_is_not(online_datasets):
    cfg, model, tr, te, test = online_datasets
    a, b, again = tr[(0, 0)], tr[(0, 1)], tr[(0, 0)]
    assert torch.equal(a["image"], again["image"])  # seeded per (epoch, index)
    # the train preset (multi-scale crop + flip): epochs see other crops of the same image
    assert not torch.equal(a["image"], b["image"]) or not torch.equal(a["geometry"], b["geometry"])
    crops = {tuple(np.round(tr[(0, e)]["geometry"][:4].numpy(), 3)) for e in range(6)}
    assert len(crops) > 1
    # the test preset: the whole 48 × 32 image resized to 32², geometry by hand
    with Image.open(test.image_paths[0]) as im:
        want = build_transform("plain", 32, False)(im.convert("RGB"))
    t = te[0]
    assert torch.equal(t["image"], want)
    np.testing.assert_allclose(t["geometry"].numpy(), [32 / 48, 0, 1, 0, 48, 32], atol=1e-5)
    assert model.needs_images and not model.needs_boxes


def test_runner_online_crop_mode_trains_and_records_the_view(online_datasets, tmp_path):
    cfg, model, tr, te, _ = online_datasets
    res = engine.fit(model, tr, te, cfg, torch.device("cpu"), tmp_path, method="t", log=lambda *_: None)
    assert np.isfinite(res["metrics"]["mAP"])
    assert model.describe()["instance_extractor"]["input"] == "crop"


# -- item 10b: best-epoch tracking ---------------------------------------------------------

def test_best_epoch_is_the_epoch_with_the_highest_test_map(tmp_path, monkeypatch):
    cfg = _cfg("resnet", **{"train.epochs": 4, "optim.scheduler": "none"})
    labels = {s: read_labels("synthetic", tmp_path / "data", s, **cfg.data.model_dump(
        exclude={"name", "root"})) for s in ("train", "test")}
    tf = build_transform("plain", 32, False)
    seq = iter([0.30, 0.70, 0.50, 0.60])

    def fake_evaluate(model, loader, device, cfg, keep=None):
        m = next(seq)
        if keep is not None:  # the rows the engine saves as the run's predictions
            keep.update(index=np.arange(2), probs=np.full((2, 5), m, np.float32),
                        targets=np.zeros((2, 5), np.int8))
        return {"mAP": m, "CF1": m / 2, "AP": [m], "n_evaluated": 16, "n_skipped": 0}
    monkeypatch.setattr(engine, "evaluate", fake_evaluate)
    torch.manual_seed(0)
    res = engine.fit(CrashingNet(5), ImageDataset(labels["train"], tf), ImageDataset(labels["test"], tf),
                     cfg, torch.device("cpu"), tmp_path / "ck", method="t", log=lambda *_: None)
    assert res["best_epoch"] == 2 and res["best_mAP"] == 0.70
    assert res["best_metrics"]["CF1"] == 0.35 and "epoch" not in res["best_metrics"]
    assert res["metrics"]["mAP"] == 0.60  # the final epoch's, reported apart
    assert [h["mAP"] for h in res["history"]] == [0.30, 0.70, 0.50, 0.60]
    assert torch.load(tmp_path / "ck" / "best.pt", weights_only=True)["epoch"] == 2


# -- item 10c / item 9: which rows may carry a detector block --------------------------------

DET = {"detector.arch": "resnet18_fpn", "detector.backbone_weights": "none",
       "detector.representation_size": 1024, "detector.min_size": 64, "detector.max_size": 96}


def test_an_online_row_may_carry_a_detector_block_and_says_where_it_comes_from():
    cfg = _cfg(**{**ONLINE, "model.detector_weights": "coco", **DET})
    source.check(cfg)
    proto = source.describe(cfg)
    assert proto["instance_source"] == "detector"
    assert proto["detector"]["trained_on"] == ["synthetic/train"] and proto["detector"]["overlaps_test"] is False
    assert source.files(cfg, None) == []  # the runner makes the weights; nothing to find
    step = source.detector_step(cfg, None)
    assert "resnet18_fpn" in step and "synthetic/train only" in step and "online detector" in step
    # without the block the same row names the public weights
    plain = _cfg(**{**ONLINE, "model.detector_weights": "coco"})
    assert source.describe(plain)["detector"]["trained_on"] == ["coco/train2017"]


@pytest.mark.parametrize("over, msg", [
    ({**ONLINE}, "model.detector_weights='none'"),                      # online + other weights
    ({**ONLINE, "model.detector_weights": "coco", "model.feat_dim": 256}, "representation_size"),
    ({"model.features": "e2e"}, "does not read detector instances"),
    ({"model.features": "cache", "model.instance_source": "boxes"}, "does not read detector instances"),
])
def test_a_detector_block_that_cannot_feed_the_row_is_refused(over, msg):
    with pytest.raises(C.ConfigError, match=msg):
        _cfg(**over, **DET)


def test_coco_table2_dry_run_lists_the_detector_step_and_both_gm_mlic_rows(capsys):
    assert main(["run", "--suite", "coco_table2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "'GM-MLIC' seed=0" in out and "'GM-MLIC (detector trained on train2014)' seed=0" in out
    steps = [ln for ln in out.splitlines() if "detector step:" in ln]
    assert len(steps) == 1 and "resnet50_fpn" in steps[0] and "coco2014/train only" in steps[0]


def test_an_online_row_with_a_detector_block_loads_the_weights_prepare_made(monkeypatch):
    cfg = _cfg(**{**ONLINE, "model.detector_weights": "coco", **DET})
    model = METHODS.get("gm_mlic").fn(cfg.model, runner._DataCache().get(cfg)[3])
    with pytest.raises(RuntimeError, match="has not been prepared"):
        source.open_sources(model, cfg, None)
    # what prepare() records after training (here: a random-init stand-in for the file)
    monkeypatch.setitem(source._PREPARED, source.detector_key(cfg), {"weights": "none", "sha256": "x"})
    assert source.open_sources(model, cfg, None) == (None, None)
    assert model._extractor.cfg.weights == "none"
    assert model._extractor.cfg.min_size is None  # the size the file was trained at, not 64
    assert source.describe(cfg, model)["detector"]["sha256"] == "x"
