"""`gmbench detector train`: a Faster R-CNN on a training split's boxes, its weights file,
extraction with it, and the errors a user meets (no boxes, wrong weights, missing split)."""
import hashlib
import json

import numpy as np
import pytest
import torch

from gmbench.cli import main

try:
    from fixtures_official import write_nuswide
except ImportError:  # run from the repo root
    from tests.fixtures_official import write_nuswide

DATA = ["-o", "n_train=16", "-o", "n_test=8", "-o", "num_classes=3", "-o", "resolution=64"]
# The synthetic preset, shrunk: 12 images, batch 4, 3 epochs = 9 steps, random-init trunk (the
# preset's synthetic pretraining is tested in tests/test_pretrain.py).
FAST = ["--set", "backbone_weights=none", "--set", "epochs=3", "--set", "batch_size=4", "--set", "max_train_images=12",
        "--set", "warmup_iters=2", "--set", "lr=0.01", "--set", "lr_steps=[]"]


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("det")
    rc = main(["detector", "train", "--dataset", "synthetic", *DATA, "--preset", "synthetic",
               *FAST, "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def test_training_lowers_the_loss_and_records_ap(trained):
    rec = json.loads((trained / "record.json").read_text())
    losses = [x for e in rec["history"] for x in e["losses"]]
    assert len(losses) == 9  # 3 epochs × ceil(12 / 4) steps, all finite
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    assert rec["trained_on"]["split"] == "train" and rec["trained_on"]["n_images"] == 12
    ap = rec["box_ap"]
    assert rec["eval_split"] == "test" and 0.0 <= ap["AP50"] <= 1.0 and ap["AP"] <= ap["AP50"]
    assert rec["sha256"] == _sha256(trained / "detector.pth")
    assert (trained / "checkpoints").is_dir()


def test_weights_file_loads_weights_only_and_names_its_architecture(trained):
    obj = torch.load(trained / "detector.pth", map_location="cpu", weights_only=True)
    assert obj["format"] == "gmbench-detector/1"
    assert obj["arch"]["backbone"] == "resnet18" and obj["arch"]["representation_size"] == 256
    assert obj["num_classes"] == 4 and len(obj["class_names"]) == 3
    assert obj["state_dict"]["roi_heads.box_head.fc6.weight"].shape == (256, 64 * 7 * 7)
    assert not any(k.endswith("num_batches_tracked") for k in obj["state_dict"])


def test_rerun_finds_the_finished_detector_and_resumes_from_checkpoints(trained, capsys):
    before = torch.load(trained / "detector.pth", weights_only=True)["state_dict"]
    rec = json.loads((trained / "record.json").read_text())
    # a finished directory: the same command returns at once, nothing retrained
    assert main(["detector", "train", "--dataset", "synthetic", *DATA, "--preset", "synthetic",
                 *FAST, "--out", str(trained), "--no-progress"]) == 0
    # only checkpoints left (as after a kill before the weights were written): resume
    # from the last one (epoch 3 of 3), so no step is retrained and the weights are equal
    (trained / "record.json").unlink()
    (trained / "detector.pth").unlink()
    assert main(["detector", "train", "--dataset", "synthetic", *DATA, "--preset", "synthetic",
                 *FAST, "--out", str(trained), "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().err
    after = torch.load(trained / "detector.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((trained / "record.json").read_text())["history"] == rec["history"]


def test_extract_with_the_trained_weights_gives_a_valid_cache(trained, tmp_path):
    from gmbench.data import data_config, get_spec
    from gmbench.instances import open_cache
    out = tmp_path / "cache"
    rc = main(["extract", "--dataset", "synthetic", *DATA, "--split", "test", "--top-m", "5",
               "--weights", str(trained / "detector.pth"), "--out", str(out), "--no-progress",
               "--num-workers", "0"])
    assert rc == 0
    cfg = data_config("synthetic", n_train=16, n_test=8, num_classes=3, resolution=64)
    spec = get_spec("synthetic")
    labels = spec.read_labels(spec.prepare_root(cfg), "test", cfg)
    cache = open_cache(out)
    cache.validate(labels.image_ids, dataset="synthetic", split="test")
    man = json.loads((out / "manifest.json").read_text())
    # the weights' full sha256 is part of the cache identity; the trunk is the trained one
    assert man["settings"]["weights"].endswith(_sha256(trained / "detector.pth"))
    assert man["settings"]["arch"] == "fasterrcnn_resnet18_fpn"
    assert man["settings"]["min_size"] == 64 and man["feat_dim"] == 256
    assert man["settings"]["trained_on"] == {"dataset": "synthetic", "split": "train", "n_images": 12}
    for i in range(len(labels)):
        item = cache[i]
        assert item["feat"].shape[1] == 256 and 0 < len(item["boxes"]) <= 5
        assert (item["boxes"] >= 0).all() and (item["boxes"] <= 1).all()
        assert np.all(np.diff(item["scores"]) <= 0)  # most confident first


def test_a_dataset_without_boxes_is_a_clear_error(tmp_path, capsys):
    root = write_nuswide(tmp_path / "nus", ["cat", "dog"],
                         {"train": [("a\\1.jpg", ["cat"]), ("a\\2.jpg", ["dog"])],
                          "test": [("b\\3.jpg", ["cat"])]})
    rc = main(["detector", "train", "--dataset", "nuswide", "--root", str(root),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "no box annotations" in err and "nuswide" in err
    assert "--weights coco" in err  # what to do instead


def test_a_missing_split_is_a_clear_error(tmp_path, capsys):
    rc = main(["detector", "train", "--dataset", "synthetic", *DATA, "--split", "val",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "'val'" in err and "train, test" in err


def test_a_bad_setting_is_a_config_error(tmp_path, capsys):
    rc = main(["detector", "train", "--dataset", "synthetic", "--set", "epoch=2",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "detector.epoch" in err and "epochs" in err


def test_wrong_architecture_weights_are_a_clear_error(trained, tmp_path, capsys):
    import torchvision
    classifier = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), classifier)
    args = ["extract", "--dataset", "synthetic", *DATA, "--split", "test", "--out",
            str(tmp_path / "c"), "--no-progress", "--num-workers", "0", "--weights"]
    assert main(args + [str(classifier)]) == 2
    err = capsys.readouterr().err
    assert "not a Faster R-CNN" in err and "ResNet classifier" in err and "detector train" in err
    # a header that names another trunk than the tensors hold
    obj = torch.load(trained / "detector.pth", weights_only=True)
    obj["arch"] = dict(obj["arch"], backbone="resnet50")
    lying = tmp_path / "lying.pth"
    torch.save(obj, lying)
    assert main(args + [str(lying)]) == 2
    err = capsys.readouterr().err
    assert "does not fit fasterrcnn_resnet50_fpn" in err and str(lying) in err


def test_the_synthetic_preset_is_the_demo_suites_detector():
    from gmbench import runner
    from gmbench.cli.detector import detector_config
    runs = runner.plan(runner.load_suite("demo"), {})
    demo = next(r.cfg.detector for r in runs if r.cfg.detector is not None)
    assert detector_config("synthetic", []) == demo
