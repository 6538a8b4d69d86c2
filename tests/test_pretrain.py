"""The synthetic pretraining (gmbench/pretrain): cached by its settings and reused, loaded
exactly into the trunks that ask for it (a method's, the detector's), named in the record."""
import json

import pytest
import torch
import yaml

from conftest import tiny_sets
from gmbench import config as C
from gmbench import pretrain
from gmbench.cli import main
from gmbench.errors import WeightsError
from gmbench.pretrain import synthetic as S

# Tiny: 16 training images at 32 px, one epoch (about a second on one thread).
TINY_P = {"n_images": 16, "n_val": 8, "resolution": 32, "image_size": 32, "epochs": 1,
          "batch_size": 8, "num_classes": 5}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GMBENCH_CACHE", str(tmp_path / "cache"))
    S._PREPARED.clear()
    yield tmp_path / "cache"
    S._PREPARED.clear()


def tiny(**kw):
    return pretrain.SyntheticPretrainConfig(**{**TINY_P, **kw})


def test_cached_and_reused_second_call_trains_nothing(cache, monkeypatch):
    p = tiny()
    first = pretrain.prepare(p, log=lambda m: None)
    assert first["trained"] and first["weights"].startswith(str(cache / "pretrain"))
    assert first["digest"] in first["weights"]
    man = json.loads(S.manifest_path(p).read_text())
    assert man["sha256"] == first["sha256"] and man["settings"] == p.key_settings()
    S._PREPARED.clear()  # a new process: only the disk remembers

    def no_training(*a, **k):
        raise AssertionError("the cached pretraining was trained again")
    monkeypatch.setattr(S, "train", no_training)
    again = pretrain.prepare(p, log=lambda m: None)
    assert not again["trained"] and again["sha256"] == first["sha256"]
    # a file that no longer matches its manifest is trained again, not trusted
    S._PREPARED.clear()
    path = pretrain.weights_path(p)
    path.write_bytes(path.read_bytes()[:-7] + b"garbage")
    with pytest.raises(WeightsError, match="sha256"):
        pretrain.load(p)
    with pytest.raises(AssertionError, match="trained again"):
        pretrain.prepare(p, log=lambda m: None)


def test_key_changes_with_every_setting_but_threads():
    base = tiny()
    changed = {"depth": 34, "data_seed": 2, "n_images": 17, "n_val": 9, "num_classes": 6,
               "resolution": 48, "n_scenes": 5, "clutter": 1, "image_size": 48, "seed": 1,
               "epochs": 2, "batch_size": 4, "lr": 0.05, "momentum": 0.8, "weight_decay": 0.0,
               "warmup_epochs": 0.0, "hflip": False}
    assert set(changed) | {"num_threads"} == set(pretrain.SyntheticPretrainConfig.model_fields)
    keys = {pretrain.digest(base)}
    for k, v in changed.items():
        other = tiny(**{k: v})
        keys.add(pretrain.digest(other))
        assert pretrain.weights_path(other) != pretrain.weights_path(base), k
    assert len(keys) == len(changed) + 1
    assert pretrain.digest(tiny(num_threads=1)) == pretrain.digest(base)


def _cfg(**sets):
    raw = C.compose("resnet", "synthetic", C.dotted_to_nested(
        {"data.n_train": 24, "data.n_test": 16, "data.resolution": 32, "data.image_size": 32,
         "data.num_classes": 5, "model.depth": 18, **sets}))
    return C.validate(raw)


def test_config_fills_checks_and_keeps_other_run_ids():
    cfg = _cfg(**{"model.pretrained": "synthetic"})
    assert cfg.pretrain == pretrain.SyntheticPretrainConfig()  # the defaults, hashed into the run id
    assert C.to_dict(cfg)["pretrain"]["n_images"] == cfg.pretrain.n_images
    plain = _cfg(**{"model.pretrained": "none"})
    assert plain.pretrain is None and "pretrain" not in C.to_dict(plain)
    with pytest.raises(C.ConfigError, match="nothing in this run uses it"):
        _cfg(**{"model.pretrained": "none", "pretrain": {"epochs": 2}})
    with pytest.raises(C.ConfigError, match="model.depth=34"):
        _cfg(**{"model.pretrained": "synthetic", "model.depth": 34})


def _trunk_tensors(trunk):
    """The torchvision ResNet names of a gmbench trunk's tensors (Sequential conv1, bn1, relu,
    maxpool, layer1..4 → their names)."""
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    return {f"{names[int(k.split('.')[0])]}.{k.split('.', 1)[1]}": v
            for k, v in trunk.state_dict().items()}


def test_synthetic_loads_exactly_those_weights_into_trunk_and_detector(cache):
    from gmbench.data import load_splits
    from gmbench.data.base import data_cache_dir
    from gmbench.data.side_info import build_data_info
    from gmbench.detector.train import build_trainable
    from gmbench.instances.source import detector_key
    from gmbench.registry import METHODS
    cfg = _cfg(**{"model.pretrained": "synthetic", "pretrain": TINY_P})
    pretrain.prepare(cfg.pretrain, log=lambda m: None)
    ref = pretrain.load(cfg.pretrain)
    root, train, _, = load_splits(cfg.data)[:3]
    info = build_data_info(train, cfg.data, data_cache_dir(cfg.data, root))
    model = METHODS.get("resnet").fn(pretrain.resolve_model(cfg), info)
    got = _trunk_tensors(model.backbone)
    assert set(got) == {k for k in ref if not k.startswith("fc.")}
    for k, v in got.items():
        assert torch.equal(v, ref[k]), k
    scratch = METHODS.get("resnet").fn(_cfg(**{"model.pretrained": "none"}).model, info)
    assert not torch.equal(scratch.backbone[0].weight, ref["conv1.weight"])
    with pytest.raises(ValueError, match="the runner prepares"):  # never read as a file name
        METHODS.get("resnet").fn(cfg.model, info)

    det = C.validate(C.deep_merge(C.compose("gm_mlic", "synthetic"), C.dotted_to_nested({
        "data.num_classes": 5, "model.feat_dim": 64, "model.top_m": 4, "pretrain": TINY_P,
        "detector": {"arch": "resnet18_fpn", "backbone_weights": "synthetic", "trainable_layers": 5,
                     "representation_size": 64, "fpn_channels": 32, "min_size": 32, "max_size": 32}})))
    assert det.pretrain == cfg.pretrain
    body = build_trainable(pretrain.resolve_detector(det), 6).backbone.body.state_dict()
    for k, v in ref.items():
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked"):
            assert torch.equal(body[k], v), k
    # the detector's identity follows the weights its trunk starts from
    other = det.model_copy(update={"pretrain": tiny(seed=1)})
    assert detector_key(other) != detector_key(det)


def test_record_protocol_names_the_pretraining(cache, tmp_path):
    doc = {"name": "pre", "seeds": [0],
           "defaults": {"model": {"depth": 18, "pretrained": "synthetic"}, "pretrain": TINY_P},
           "table": {"columns": ["mAP"], "chance": True},
           "rows": [{"label": "ResNet GMP", "method": "resnet", "dataset": "synthetic"}]}
    suite = tmp_path / "pre.yaml"
    suite.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    sets = [x for s in tiny_sets(**{"data.train_transform": "plain", "data.test_transform": "plain"})
            for x in ("--set", s)]
    assert main(["run", "--suite", str(suite), "--out", str(out)] + sets) == 0
    rec = json.loads((out / "pre" / "runs.jsonl").read_text().splitlines()[0])
    p = pretrain.SyntheticPretrainConfig(**TINY_P)
    pre = rec["protocol"]["pretraining"]
    assert pre["source"] == "synthetic" and pre["digest"] == pretrain.digest(p)
    assert pre["used_by"] == ["trunk"] and pre["settings"] == p.key_settings()
    assert pre["weights"] == str(pretrain.weights_path(p))
    assert pre["sha256"] == json.loads(S.manifest_path(p).read_text())["sha256"]
    assert rec["config"]["model"]["pretrained"] == "synthetic"  # the run's own config keeps the name
    table = (out / "pre" / "table.md").read_text()
    assert f"Trunks of every row start from the synthetic pretraining {pretrain.digest(p)}" in table
