"""End to end through the CLI: records, skipping, byte-identical re-rendering, crash safety."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import subprocess_env, tiny_sets
from gmbench.utils.checkpoint import list_checkpoints
from gmbench.cli import main
from gmbench.utils.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]


def write_suite(tmp_path, seeds=(0,), name="tiny", rows=2):
    doc = {"name": name, "seeds": list(seeds),
           "defaults": {"model": {"depth": 18, "pretrained": "none"}},
           "table": {"columns": ["mAP", "CF1", "OF1", "OF1@3"], "chance": True},
           "rows": [{"label": "ResNet GMP", "method": "resnet", "dataset": "synthetic",
                     "set": {"model.pool": "max"}},
                    {"label": "ResNet GAP", "method": "resnet_gap", "dataset": "synthetic"}][:rows]}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return str(p)


def sets(**extra):
    return [x for s in tiny_sets(**{"data.train_transform": "plain", "data.test_transform": "plain",
                                    **extra}) for x in ("--set", s)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    suite = write_suite(tmp, seeds=(0, 1))
    out = tmp / "out"
    assert main(["run", "--suite", suite, "--out", str(out), "--format", "csv,md,tex"] + sets()) == 0
    return suite, out


def test_records_and_tables(finished):
    suite, out = finished
    recs = read_jsonl(out / "tiny" / "runs.jsonl")
    assert sorted((r["row"], r["seed"]) for r in recs) == [
        ("ResNet GAP", 0), ("ResNet GAP", 1), ("ResNet GMP", 0), ("ResNet GMP", 1)]
    r = recs[0]
    for key in ("suite", "method", "dataset", "config", "metrics", "per_class_ap", "timing",
                "environment", "chance_mAP", "model_record"):
        assert key in r
    assert r["config"]["model"]["depth"] == 18 and r["config"]["data"]["n_train"] == 24
    assert r["model_record"]["weights"] == "random-init"
    assert len(r["per_class_ap"]) == 5 and 0 <= r["metrics"]["mAP"] <= 1
    assert torch.__version__.startswith(r["environment"]["versions"]["torch"])
    gap = [x for x in recs if x["row"] == "ResNet GAP"]
    assert gap[0]["config"]["model"]["pool"] == "avg"
    with open(out / "tiny" / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [x["row"] for x in rows] == ["ResNet GMP", "ResNet GAP"]
    assert all(x["n_seeds"] == "2" for x in rows)
    maps = [100 * x["metrics"]["mAP"] for x in recs if x["row"] == "ResNet GMP"]
    assert float(rows[0]["mAP"]) == pytest.approx(sum(maps) / 2, abs=0.051)
    md = (out / "tiny" / "table.md").read_text()
    assert "±" in md and "chance mAP" in md
    tex = (out / "tiny" / "table.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and tex.count(r"\textbf{") >= 1


def test_rerun_skips_and_table_is_byte_identical(finished, capsys):
    suite, out = finished
    d = out / "tiny"
    before = {f: (d / f).read_bytes() for f in ("runs.jsonl", "table.csv", "table.md", "table.tex")}
    t0 = time.time()
    assert main(["run", "--suite", suite, "--out", str(out), "--format", "csv,md,tex"] + sets()) == 0
    assert "4 of 4 runs already finished" in capsys.readouterr().out
    assert (d / "runs.jsonl").read_bytes() == before["runs.jsonl"]
    for f in ("table.csv", "table.md", "table.tex"):
        (d / f).unlink()
    assert main(["table", str(d), "--format", "csv,md,tex"]) == 0
    for f in ("table.csv", "table.md", "table.tex"):
        assert (d / f).read_bytes() == before[f], f
    assert time.time() - t0 < 120


def test_sigkill_leaves_nothing_half_written(tmp_path):
    suite = write_suite(tmp_path, rows=1)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "gmbench", "run", "--suite", suite, "--out", str(out)] + sets(
        **{"train.epochs": 2, "train.ckpt_every_steps": 1, "data.n_train": 32,
           "train.keep_final_weights": True})
    env = subprocess_env()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckdir = out / "tiny" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if len(list(ckdir.rglob("ckpt-*.pt"))) >= 1:
            time.sleep(0.3)
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for p in ckdir.rglob("*.pt"):
        torch.load(p, weights_only=True)       # every checkpoint on disk is whole
    for line in (out / "tiny" / "runs.jsonl").read_text().splitlines() if (out / "tiny" / "runs.jsonl").exists() else []:
        json.loads(line)
    # re-running resumes from the checkpoint and finishes every row
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming epoch 1/2" in res.stdout
    recs = read_jsonl(out / "tiny" / "runs.jsonl")
    assert [r["row"] for r in recs] == ["ResNet GMP"]
    assert recs[0]["train"]["resumed_from"]
    assert [p.name for p in list_checkpoints(ckdir / recs[0]["run_id"])] == ["ckpt-e0002-s0000000.pt"]


def test_a_finished_run_deletes_its_checkpoints(finished):
    _, out = finished
    recs = read_jsonl(out / "tiny" / "runs.jsonl")
    for rec in recs:
        left = sorted(p.name for p in (out / "tiny" / "checkpoints" / rec["run_id"]).iterdir())
        assert left == ["run.json"], left
