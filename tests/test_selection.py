"""gmbench run --rows / scoped --set / --dry-run differences (gmbench.selection)."""
import pytest
import yaml

from gmbench import config as C
from gmbench import runner
from gmbench.cli import main
from gmbench.selection import differing_settings, select_rows, split_overrides

ROWS = [{"label": "ResNet GMP", "method": "resnet", "dataset": "synthetic"},
        {"label": "ResNet GAP", "method": "resnet_gap", "dataset": "synthetic"},
        {"label": "ML-GCN", "method": "ml_gcn", "dataset": "synthetic",
         "set": {"train.clip_grad_norm": None}}]


def suite():
    return runner.SuiteSpec.model_validate({"name": "s", "rows": ROWS,
                                            "defaults": {"model": {"depth": 18}}})


def test_rows_filter_by_label_or_method_glob():
    s = suite()
    assert [r.label for r in select_rows(s, ["ResNet*"]).rows] == ["ResNet GMP", "ResNet GAP"]
    assert [r.label for r in select_rows(s, ["ml_gcn"]).rows] == ["ML-GCN"]
    assert [r.label for r in select_rows(s, ["resnet_gap", "ML-GCN"]).rows] == ["ResNet GAP", "ML-GCN"]
    with pytest.raises(C.ConfigError, match="matches no row"):
        select_rows(s, ["CSRA*"])


def test_row_and_method_scoped_overrides_reach_only_their_rows():
    s = suite()
    common, per_row = split_overrides(
        ["train.epochs=2", "ResNet G?P:model.pool=avg", "ml_gcn.model.tau=0.3",
         "resnet.optim.lr=0.5"], s)
    assert common == {"train": {"epochs": 2}}
    runs = {r.row.label: r.cfg for r in runner.plan(s, common, row_overrides=per_row)}
    assert runs["ResNet GMP"].model.pool == runs["ResNet GAP"].model.pool == "avg"
    assert runs["ML-GCN"].model.tau == 0.3 and runs["ML-GCN"].model.pool == "max"
    # "resnet" names the model that both ResNet rows register (resnet_gap.yaml → resnet)
    assert runs["ResNet GMP"].optim.lr == runs["ResNet GAP"].optim.lr == 0.5
    assert runs["ML-GCN"].optim.lr != 0.5
    assert all(c.train.epochs == 2 for c in runs.values())


def test_scoped_overrides_are_validated():
    s = suite()
    with pytest.raises(C.ConfigError, match="no row label"):
        split_overrides(["CSRA:model.lam=0.3"], s)
    with pytest.raises(C.ConfigError, match="no row of method"):
        split_overrides(["ssgrl.model.time_steps=2"], s)
    with pytest.raises(C.ConfigError, match="neither a config key"):
        split_overrides(["csraa.model.lam=0.3"], s)
    common, per_row = split_overrides(["ml_gcn.model.lam=0.3"], s)
    with pytest.raises(C.ConfigError, match="ML-GCN.*model.lam"):
        runner.plan(s, common, row_overrides=per_row)


def test_differing_settings_name_each_rows_odd_values():
    s = suite()
    runs = runner.plan(s, {})
    diffs = {r.row.label: d for r, d in zip(runs, differing_settings(runs))}
    assert diffs["ResNet GMP"]["train.clip_grad_norm"] == 10.0
    assert diffs["ML-GCN"]["train.clip_grad_norm"] is None
    assert diffs["ResNet GMP"]["model.pool"] == "max" and diffs["ResNet GAP"]["model.pool"] == "avg"
    assert diffs["ML-GCN"]["model.pool"] == "max"  # GAP's avg makes the key differ for all rows
    assert "model.tau" not in diffs["ResNet GMP"]  # only ML-GCN has it
    assert "seed" not in diffs["ML-GCN"] and "optim.momentum" not in diffs["ML-GCN"]


def test_dry_run_prints_differences_and_honours_rows(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "rows": ROWS, "defaults": {"model": {"depth": 18}}}))
    assert main(["run", "--suite", str(p), "--dry-run", "--rows", "ResNet*", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ML-GCN" not in out and "'ResNet GAP'" in out
    assert "differs: model.pool=avg" in out
    assert main(["run", "--suite", str(p), "--dry-run", "--set", "Nope:train.epochs=1",
                 "--out", str(tmp_path)]) == 2
