"""The protocol block of run records: what each method saw (gmbench/instances/source.py).

Checked on the suites' planned configs (no training), and on instance-cache manifests
written here in the format ``gmbench extract`` writes."""
import json

import pytest

from gmbench import config as C
from gmbench import runner
from gmbench.instances.source import describe as describe_protocol


def _planned(suite, label, **over):
    runs = runner.plan(runner.load_suite(suite), over)
    return next(r.cfg for r in runs if r.row.label == label)


def test_demo_main_gm_mlic_row_uses_a_train_split_detector_and_no_test_annotations():
    suite = runner.load_suite("demo")
    runs = runner.plan(suite, {})
    gm = [r for r in runs if r.row.method == "gm_mlic" and r.cfg.detector is not None]
    assert {r.seed for r in gm} >= {0, 1, 2}  # at least 3 seeds
    for r in gm:
        p = describe_protocol(r.cfg, None)
        assert p["test_annotations_used"] is False
        assert p["instance_source"] == "detector"
        assert p["detector"]["trained_on"] == ["synthetic/train"]
        assert p["detector"]["overlaps_test"] is False
        assert p["extra_supervision"] == "box annotations of synthetic/train (detector training)"
    # every row has >= 3 seeds, and the headline rows see no test annotations at all
    for row in suite.rows:
        assert len(row.seeds or suite.seeds) >= 3
    for r in runs:
        if "oracle" not in r.row.label.lower():
            assert describe_protocol(r.cfg, None)["test_annotations_used"] is False, r.row.label


def test_baselines_see_no_instances():
    p = describe_protocol(_planned("demo", "ResNet-18 (GMP)"), None)
    assert p == {"test_annotations_used": False, "instance_source": "none", "detector": None,
                 "extra_supervision": None}


def test_annotation_box_instances_are_test_annotations():
    raw = C.compose("gm_mlic", "synthetic", {"model": {"features": "e2e", "depth": 18}})
    p = describe_protocol(C.validate(raw), None)
    assert p["test_annotations_used"] is True and p["instance_source"] == "annotation_boxes"
    raw = C.compose("gm_mlic", "synthetic", {"model": {"instance_source": "boxes"}})
    assert describe_protocol(C.validate(raw), None)["test_annotations_used"] is True


def test_coco_suite_with_the_public_checkpoint_flags_the_val2014_overlap():
    cfg = _planned("coco_table2", next(r.label for r in runner.load_suite("coco_table2").rows
                                       if r.method == "gm_mlic"))
    p = describe_protocol(cfg, None)
    assert p["instance_source"] == "detector" and p["test_annotations_used"] is False
    det = p["detector"]
    assert det["weights"].endswith("FasterRCNN_ResNet50_FPN_Weights.COCO_V1")
    assert det["trained_on"] == ["coco/train2017"] and det["overlaps_test"] is True
    # the paper rows run the detector on cached views (online mode alike): the config names
    # the weights, nothing is assumed
    assert cfg.model.features == "views" and "assumed" not in det["note"]
    online = cfg.model_copy(update={"model": cfg.model.model_copy(update={"features": "online"})})
    assert "assumed" not in describe_protocol(online, None)["detector"]["note"]
    cached = cfg.model_copy(update={"model": cfg.model.model_copy(update={"features": "cache"})})
    assert "assumed" in describe_protocol(cached, None)["detector"]["note"]  # no cache on disk


def _manifest(cache_dir, split, settings, top_m=35):
    d = cache_dir / "instances" / f"{split}-detector-m{top_m}"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"settings": settings}))


@pytest.mark.parametrize("trained_split,overlap", [("train", False), ("val", True)])
def test_a_cache_made_with_a_trained_detector_file_names_its_training_split(tmp_path, trained_split,
                                                                             overlap):
    _manifest(tmp_path, "val", {"weights": "file:detector.pth#sha256:" + "ab" * 32,
                                "trained_on": {"dataset": "coco2014", "split": trained_split}})
    raw = C.compose("gm_mlic", "coco2014", {"data": {"cache_dir": str(tmp_path)}})
    p = describe_protocol(C.validate(raw), None)
    det = p["detector"]
    assert det["weights"] == "detector.pth" and det["sha256"] == "ab" * 32
    assert det["trained_on"] == [f"coco2014/{trained_split}"] and det["overlaps_test"] is overlap
    assert p["extra_supervision"] == f"box annotations of coco2014/{trained_split} (detector training)"


def test_a_cache_made_with_the_public_checkpoint_is_not_assumed(tmp_path):
    _manifest(tmp_path, "test", {"weights": "torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1"},
              top_m=10)
    raw = C.compose("gm_mlic", "voc2007", {"data": {"cache_dir": str(tmp_path)},
                                           "model": {"top_m": 10}})
    det = describe_protocol(C.validate(raw), None)["detector"]
    assert det["overlaps_test"] is None and "unknown" in det["note"] and "assumed" not in det["note"]


def test_a_detector_block_on_a_method_without_instances_is_a_config_error():
    raw = C.compose("resnet", "synthetic", {"detector": {"arch": "resnet18_fpn"}})
    with pytest.raises(C.ConfigError, match="does not read detector instances"):
        C.validate(raw)
    raw = C.compose("gm_mlic", "synthetic", {"detector": {"representation_size": 256}})
    with pytest.raises(C.ConfigError, match="model.feat_dim=1024 but detector.representation_size=256"):
        C.validate(raw)
    raw = C.compose("gm_mlic", "synthetic", {"detector": {"arch": "resnet19_fpn"}})
    with pytest.raises(C.ConfigError, match="detector.arch"):
        C.validate(raw)


def test_online_rows_name_the_detector_they_run(tmp_path):
    raw = C.compose("gm_mlic", "synthetic", {"model": {"features": "online", "detector_weights": "none"}})
    p = describe_protocol(C.validate(raw), None)
    assert p["instance_source"] == "detector" and p["test_annotations_used"] is False
    assert p["detector"]["weights"].startswith("random-init") and p["detector"]["trained_on"] == []
    w = tmp_path / "det.pth"
    raw = C.compose("gm_mlic", "synthetic", {"model": {"features": "online", "detector_weights": str(w)}})
    det = describe_protocol(C.validate(raw), None)["detector"]
    assert det["weights"] == str(w) and det["overlaps_test"] is None  # header unknown until built
