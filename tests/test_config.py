"""Config layering, validation errors and the CLI's exit code 2."""
import pytest
import yaml

from gmbench import config as C
from gmbench.cli import main
from gmbench.runner import load_suite, plan


def write_suite(tmp_path, rows, **top):
    doc = {"name": "t", "seeds": [0], "rows": rows, **top}
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(doc))
    return str(p)


def test_layer_order(tmp_path):
    # defaults (momentum .9) < dataset (image_size 64) < method (image_size 448, lr .1)
    # < suite defaults (lr .2) < row set (lr .3) < --set (epochs 7)
    suite = load_suite(write_suite(tmp_path, [
        {"label": "a", "method": "resnet", "dataset": "synthetic", "set": {"optim.lr": 0.3}},
        {"label": "b", "method": "resnet", "dataset": "synthetic"}],
        defaults={"optim": {"lr": 0.2}}))
    runs = plan(suite, C.parse_set(["train.epochs=7"]))
    a, b = runs[0].cfg, runs[1].cfg
    assert a.optim.momentum == 0.9                   # defaults.yaml
    assert a.data.num_classes == 10                  # datasets/synthetic.yaml
    assert a.data.image_size == 448                  # methods/resnet.yaml beats the dataset
    assert a.optim.lr == 0.3 and b.optim.lr == 0.2   # row beats suite defaults
    assert a.train.epochs == b.train.epochs == 7     # --set beats everything
    assert a.data.name == "synthetic" and a.model.name == "resnet"


def test_parse_set_types():
    got = C.parse_set(["optim.lr=0.5", "model.pool=avg", "train.clip_grad_norm=null",
                       "x.y=[1,2]", "train.amp=false"])
    assert got == {"optim": {"lr": 0.5}, "model": {"pool": "avg"}, "x": {"y": [1, 2]},
                   "train": {"clip_grad_norm": None, "amp": False}}
    with pytest.raises(C.ConfigError, match="key.path=value"):
        C.parse_set(["nonsense"])


def _validate(**over):
    raw = C.compose("resnet", "synthetic", C.parse_set([f"{k}={v}" for k, v in over.items()]))
    return C.validate(raw)


def test_unknown_key_names_path_and_nearest():
    with pytest.raises(C.ConfigError) as e:
        _validate(**{"optim.lrr": 0.1})
    msg = str(e.value)
    assert "optim.lrr" in msg and "'lr'" in msg
    with pytest.raises(C.ConfigError) as e:
        _validate(**{"model.deph": 18})
    assert "model.deph" in str(e.value) and "'depth'" in str(e.value)
    with pytest.raises(C.ConfigError) as e:
        _validate(**{"trian.epochs": 1})
    assert "'train'" in str(e.value)


def test_wrong_type_names_key():
    with pytest.raises(C.ConfigError) as e:
        _validate(**{"train.epochs": "many"})
    assert "train.epochs" in str(e.value) and "many" in str(e.value)
    with pytest.raises(C.ConfigError) as e:
        _validate(**{"model.pool": "median"})
    assert "model.pool" in str(e.value)


@pytest.mark.parametrize("argv, needle", [
    (["run", "--suite", "nosuch", "--dry-run"], "Valid:"),
    (["run", "--set", "optim.lrr=1", "--dry-run"], "'lr'"),
    (["run", "--set", "train.epochs=abc", "--dry-run"], "train.epochs"),
    (["run", "--set", "model.name=nosuch", "--dry-run"], "resnet"),
    (["run", "--set", "data.name=nosuch", "--dry-run"], "synthetic"),
    (["run", "--format", "pdf", "--dry-run"], "csv, md, tex"),
])
def test_cli_errors_exit_2_without_work(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err
    assert not out.exists()


def test_unknown_method_in_suite_row(tmp_path, capsys):
    path = write_suite(tmp_path, [{"label": "x", "method": "resnett", "dataset": "synthetic"}])
    assert main(["run", "--suite", path, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "'resnet'" in err and "unknown method" in err


def test_suite_schema_rejects_unknown_keys(tmp_path):
    path = write_suite(tmp_path, [{"label": "x", "method": "resnet", "dataset": "synthetic",
                                   "sett": {}}])
    with pytest.raises(C.ConfigError, match="sett"):
        load_suite(path)
