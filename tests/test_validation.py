"""Value ranges and data roots are checked before any work starts (issue 13, item 6), and a
mistyped suite-row key lists the valid row keys (item 10)."""
import os
import re

import pytest
import yaml

from conftest import tiny_sets
from gmbench import config as C
from gmbench.cli import main
from gmbench.runner import load_suite

# (key=value, the valid range the message must state)
OUT_OF_RANGE = [
    ("train.epochs=-1", "1 <= epochs"),
    ("train.epochs=0", "1 <= epochs"),
    ("data.n_train=0", "1 <= n_train"),
    ("data.n_test=0", "1 <= n_test"),
    ("train.batch_size=0", "1 <= batch_size"),
    ("eval.batch_size=0", "1 <= batch_size"),
    ("data.image_size=0", "32 <= image_size"),
    ("optim.lr=-1", "0.0 <= lr"),
    ("optim.weight_decay=-0.1", "0.0 <= weight_decay"),
    ("optim.momentum=1", "0.0 <= momentum < 1.0"),
    ("data.num_workers=-1", "0 <= num_workers"),
    ("eval.threshold=7", "0.0 <= threshold <= 1.0"),
    ("eval.threshold=-0.5", "0.0 <= threshold <= 1.0"),
    ("eval.top_k=0", "1 <= top_k"),
    ("train.keep_last=0", "1 <= keep_last"),
    ("train.max_bad_steps=0", "1 <= max_bad_steps"),
    ("train.ckpt_every_steps=-1", "0 <= ckpt_every_steps"),
    ("data.num_classes=0", "1 <= num_classes <= 81"),
    ("data.num_classes=82", "1 <= num_classes <= 81"),
    ("seed=-1", "0 <= seed <= 4294967295"),
]


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("setting,valid", OUT_OF_RANGE)
def test_out_of_range_exits_2_before_any_file_is_written(setting, valid, tmp_path, monkeypatch,
                                                         capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("GMBENCH_CACHE", str(cache))
    monkeypatch.chdir(work)
    key, value = setting.split("=")
    sets = [x for s in tiny_sets() if not s.startswith(key + "=") for x in ("--set", s)]
    rc = main(["run", "--suite", "demo", "--out", "out", "--device", "cpu", *sets,
               "--set", setting])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"'{key}'" in err and f"got {value}" in err and f"(valid: {valid})" in err, err
    assert _listing(work) == [] and _listing(cache) == []  # no output dir, no generated data


def test_in_range_boundaries_are_accepted():
    raw = C.compose("resnet", "synthetic", C.parse_set([
        "train.epochs=1", "optim.lr=0", "optim.momentum=0", "eval.threshold=0", "data.num_workers=0",
        "train.ckpt_every_steps=0", "data.num_classes=81", "data.image_size=32", "seed=0"]))
    cfg = C.validate(raw)
    assert cfg.data.num_classes == 81 and cfg.optim.lr == 0 and cfg.eval.threshold == 0
    cfg = C.validate(C.deep_merge(raw, {"eval": {"threshold": 1.0}}))
    assert cfg.eval.threshold == 1.0


def test_betas_are_checked():
    raw = C.compose("resnet", "synthetic", C.parse_set(["optim.betas=[0.9, 1.5]"]))
    with pytest.raises(C.ConfigError, match=r"optim\.betas.*\[0, 1\).*\[0\.9, 1\.5\]"):
        C.validate(raw)


def test_synthetic_root_that_does_not_exist_is_not_created(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    nowhere = tmp_path / "nonexistent" / "deeper"
    rc = main(["run", "--suite", "demo", "--out", "out", "--device", "cpu",
               *[x for s in tiny_sets() for x in ("--set", s)], "--set", f"data.root={nowhere}"])
    err = capsys.readouterr().err
    assert rc == 2 and "'data.root'" in err and str(nowhere) in err and "does not exist" in err
    assert not (tmp_path / "nonexistent").exists() and not (tmp_path / "out").exists()


def test_synthetic_root_that_exists_is_used(tmp_path):
    from gmbench.data import data_config, get_spec
    cfg = data_config("synthetic", root=str(tmp_path), n_train=3, n_test=2, resolution=32,
                      image_size=32, num_classes=4)
    root = get_spec("synthetic").prepare_root(cfg)
    assert root == tmp_path and (tmp_path / "annotations" / "instances_train.json").is_file()


def test_check_roots_looks_without_writing(tmp_path):
    from gmbench.data import check_roots, data_config
    ok = data_config("voc2007", root=str(tmp_path))
    check_roots([ok, data_config("synthetic")])  # no root needed for synthetic
    for name in ("voc2007", "coco2014", "nuswide", "synthetic"):
        bad = data_config(name, root=str(tmp_path / "missing"))
        with pytest.raises(C.ConfigError, match=re.escape(str(tmp_path / "missing"))):
            check_roots([ok, bad])
    with pytest.raises(C.ConfigError, match="needs data.root"):
        check_roots([data_config("nuswide")])
    (tmp_path / "file").write_text("x")
    with pytest.raises(C.ConfigError, match="is not a folder"):
        check_roots([data_config("coco2014", root=str(tmp_path / "file"))])
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_empty_split_is_an_error(tmp_path):
    from fixtures_official import write_nuswide
    from gmbench.data import AnnotationError, data_config, load_splits
    root = write_nuswide(tmp_path / "nus", ["sky", "dog"],
                         {"train": [("sky\\1.jpg", ["sky"])], "test": []})
    with pytest.raises(AnnotationError, match="split 'test'.*no images"):
        load_splits(data_config("nuswide", root=str(root)))


def test_mistyped_row_key_lists_the_row_keys(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "rows": [
        {"label": "a", "method": "resnet", "dataset": "synthetic"},
        {"label": "b", "method": "resnet", "dataset": "synthetic", "sett": {}}]}))
    with pytest.raises(C.ConfigError) as e:
        load_suite(str(p))
    msg = str(e.value)
    assert "'rows.1.sett'" in msg and "Did you mean 'set'" in msg
    listed = msg.split("Valid keys here:")[1].strip().split(", ")
    assert listed == ["dataset", "label", "method", "reference", "seeds", "set", "table_row"]


def test_mistyped_key_under_an_optional_block(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "table": {"figure": {"metrc": "mAP"}},
                                 "rows": [{"label": "a", "method": "resnet",
                                           "dataset": "synthetic"}]}))
    with pytest.raises(C.ConfigError) as e:
        load_suite(str(p))
    assert "'table.figure.metrc'" in str(e.value) and "Did you mean 'metric'" in str(e.value)


@pytest.mark.parametrize("argv", [
    ["data", "check", "synthetic", "--root", "NOWHERE", "--no-progress"],
    ["data", "prepare", "synthetic", "--root", "NOWHERE"],
    ["extract", "--dataset", "synthetic", "--root", "NOWHERE", "--split", "train",
     "--source", "boxes", "--weights", "none", "--out", "OUT"],
])
def test_data_clis_do_not_create_a_missing_root(argv, tmp_path, capsys):
    nowhere = tmp_path / "nowhere"
    argv = [a.replace("NOWHERE", str(nowhere)).replace("OUT", str(tmp_path / "out")) for a in argv]
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not nowhere.exists() and not (tmp_path / "out").exists()
