"""Crash resilience: exact mid-epoch resume after SIGKILL, SIGTERM, NaN guard."""
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
from gmbench import config as C
from gmbench import engine
from gmbench.utils.checkpoint import list_checkpoints
from gmbench.data import read_labels
from gmbench.data.dataset import ImageDataset
from gmbench.data.transforms import build_transform
from gmbench.models.base import MLICModel
from gmbench.utils.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]
ENV = subprocess_env()


def suite_file(tmp_path):
    doc = {"name": "r", "seeds": [0],
           "defaults": {"model": {"depth": 18, "pretrained": "none"}},
           "rows": [{"label": "R", "method": "resnet", "dataset": "synthetic"}]}
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(doc))
    return str(p)


def cli(suite, out, **extra):
    sets = tiny_sets(**{"data.n_train": 40, "train.epochs": 2, "train.ckpt_every_steps": 1,
                        "train.keep_last": 100, "train.deterministic": True,
                        "train.keep_final_weights": True,
                        "data.train_transform": "plain", "data.test_transform": "plain", **extra})
    return [sys.executable, "-m", "gmbench", "run", "--suite", suite, "--out", str(out)] + \
        [x for s in sets for x in ("--set", s)]


def launch_and_signal(cmd, ckdir: Path, after_ckpt: str, sig=signal.SIGKILL, timeout=300):
    """Start ``cmd``; once checkpoint ``after_ckpt`` exists, send ``sig``. Returns the process."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + timeout
    # the sidecar is written just before the checkpoint is renamed into place: wait for both,
    # or a kill in between resumes from the previous checkpoint (seen on a loaded box)
    names = {after_ckpt, after_ckpt.removesuffix(".sha256")}
    while time.time() < deadline and proc.poll() is None:
        if all(list(ckdir.rglob(n)) for n in names):
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"finished before {after_ckpt}: {proc.stderr.read()[-1500:]}"
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


def final_state(ckdir: Path):
    return torch.load(list_checkpoints(ckdir)[-1], weights_only=True)["model"]


def test_sigkill_mid_epoch_resume_is_bit_exact(tmp_path):
    suite = suite_file(tmp_path)
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    res = subprocess.run(cli(suite, ref_out), cwd=REPO, env=ENV, capture_output=True, text=True,
                         timeout=400)
    assert res.returncode == 0, res.stderr[-2000:]
    ckdir = out / "r" / "checkpoints"
    # 5 steps per epoch: kill mid-epoch 1, then mid-epoch 2 (fixed offsets), resuming each time.
    # (a checkpoint counts once both it and its .sha256 sidecar are in place)
    for name in ("ckpt-e0000-s0000002.pt.sha256", "ckpt-e0001-s0000003.pt.sha256"):
        proc = launch_and_signal(cli(suite, out), ckdir, name)
        assert proc.returncode == -signal.SIGKILL
        for p in ckdir.rglob("ckpt-*.pt"):
            torch.load(p, weights_only=True)  # no checkpoint on disk fails to load
    res = subprocess.run(cli(suite, out), cwd=REPO, env=ENV, capture_output=True, text=True,
                         timeout=400)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming epoch 2/2 at step 3" in res.stdout
    recs, ref = read_jsonl(out / "r" / "runs.jsonl"), read_jsonl(ref_out / "r" / "runs.jsonl")
    assert len(recs) == 1 and len(ref) == 1
    assert recs[0]["run_id"] == ref[0]["run_id"]
    a = final_state(ref_out / "r" / "checkpoints" / ref[0]["run_id"])
    b = final_state(ckdir / recs[0]["run_id"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert recs[0]["metrics"] == ref[0]["metrics"]


def test_sigterm_checkpoints_then_exits_nonzero(tmp_path):
    suite = suite_file(tmp_path)
    out = tmp_path / "out"
    ckdir = out / "r" / "checkpoints"
    # SIGTERM during epoch 2 (after the end-of-epoch-1 checkpoint exists)
    proc = subprocess.Popen(cli(suite, out, **{"train.ckpt_every_steps": 0, "train.epochs": 3}),
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(ckdir.rglob("ckpt-e0001*")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-1500:]
    assert "stopped by signal" in err
    ckpts = list_checkpoints(next(ckdir.iterdir()))
    assert ckpts and "-s0000000" not in ckpts[-1].name  # written at a step boundary mid-epoch
    res = subprocess.run(cli(suite, out, **{"train.ckpt_every_steps": 0, "train.epochs": 3}),
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0 and "resuming" in res.stdout, res.stderr[-1500:]


class FlakyModel(MLICModel):
    """Tiny linear model whose loss is NaN on chosen calls."""

    def __init__(self, num_classes, nan_calls):
        super().__init__()
        self.fc = torch.nn.Linear(3, num_classes)
        self.nan_calls, self.calls = set(nan_calls), 0

    def forward(self, batch):
        return {"logits": self.fc(batch["image"].mean((2, 3)))}

    def loss(self, out, batch):
        self.calls += 1
        loss = super().loss(out, batch)
        return loss * float("nan") if self.calls in self.nan_calls else loss


def tiny_fit(tmp_path, nan_calls, **over):
    sets = C.parse_set(tiny_sets(**{"train.ckpt_every_steps": 1, "train.max_bad_steps": 3,
                                    "train.epochs": 2, **over}))
    cfg = C.validate(C.compose("resnet", "synthetic", sets))
    labels = {s: read_labels("synthetic", tmp_path / "data", s, **cfg.data.model_dump(
        exclude={"name", "root"})) for s in ("train", "test")}
    tf = build_transform("plain", 32, False)
    model = FlakyModel(5, nan_calls)
    return model, engine.fit(model, ImageDataset(labels["train"], tf), ImageDataset(labels["test"], tf),
                             cfg, torch.device("cpu"), tmp_path / "ck", method="Flaky", log=lambda *_: None)


def test_nan_steps_are_skipped_and_counted(tmp_path):
    model, res = tiny_fit(tmp_path, nan_calls={2, 5})
    assert res["bad_steps"] == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_consecutive_nan_aborts_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(engine.TrainingDiverged) as e:
        tiny_fit(tmp_path, nan_calls=set(range(4, 100)))
    msg = str(e.value)
    assert "Flaky" in msg and "epoch 2" in msg and "step 3" in msg and "3 consecutive" in msg
    last = torch.load(list_checkpoints(tmp_path / "ck")[-1], weights_only=True)
    assert last["epoch"] == 1 and last["step"] == 0   # 3 good steps in epoch 1, then the end-of-epoch save
    assert all(torch.isfinite(v).all() for v in last["model"].values())
