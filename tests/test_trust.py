"""Issue 13: no wrong number is ever recorded as finished.

One test per finding of the fault-injection run: run identity (a changed setting
never resumes or skips), verified checkpoints, one writer per results folder,
signals during evaluation, worker-independent augmentation, skipped test images,
clean errors, contained paths and debris.
"""
import json
import multiprocessing as mp
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
from gmbench.utils import checkpoint
from gmbench.cli import main
from gmbench.utils.io import append_jsonl, read_jsonl, sha256_file

REPO = Path(__file__).resolve().parents[1]
ENV = subprocess_env()


def suite_file(tmp_path, rows=None, name="t"):
    rows = rows or [{"label": "R", "method": "resnet", "dataset": "synthetic"}]
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"name": name, "seeds": [0], "rows": rows,
                                 "defaults": {"model": {"depth": 18, "pretrained": "none"}}}))
    return str(p)


def args(suite, out, **extra):
    # keep_final_weights: these tests drop a finished run's record to simulate a kill between
    # its last checkpoint and its record, so that checkpoint must outlive the run
    sets = tiny_sets(**{"data.train_transform": "plain", "data.test_transform": "plain",
                        "train.keep_final_weights": True, **extra})
    return ["run", "--suite", suite, "--out", str(out)] + [x for s in sets for x in ("--set", s)]


def popen(argv):
    return subprocess.Popen([sys.executable, "-m", "gmbench"] + argv, cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(pred, proc=None, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def run_dirs(out, suite="t"):
    return sorted(p for p in (out / suite / "checkpoints").iterdir() if p.is_dir())


# 1. identity -------------------------------------------------------------------------------

def test_changed_setting_starts_fresh_and_a_finished_one_is_refused(tmp_path, capsys):
    suite, out = suite_file(tmp_path), tmp_path / "out"
    assert main(args(suite, out, **{"optim.lr": 0.05})) == 0
    # Simulate a run killed after its last checkpoint but before its record: drop the record.
    (out / "t" / "runs.jsonl").write_text("")
    capsys.readouterr()
    assert main(args(suite, out, **{"optim.lr": 0.0001})) == 0
    log = capsys.readouterr().out
    assert "resuming" not in log and "already trained" not in log
    rec, = read_jsonl(out / "t" / "runs.jsonl")
    assert rec["config"]["optim"]["lr"] == 0.0001
    assert len(run_dirs(out)) == 2 and (out / "t" / "checkpoints" / rec["run_id"]).is_dir()
    # The lr-0.05 run's checkpoints are still its own: asking for it again resumes them ...
    # ... but only after the finished lr-0.0001 record is dealt with: refused by default.
    assert main(args(suite, out, **{"optim.lr": 0.05})) == 2
    err = capsys.readouterr().err
    assert "optim.lr: 0.0001 → 0.05" in err and "--replace" in err
    assert main(args(suite, out, **{"optim.lr": 0.05}) + ["--replace"]) == 0
    assert "all 1 epochs were already trained" in capsys.readouterr().out
    rec, = read_jsonl(out / "t" / "runs.jsonl")
    old, = read_jsonl(out / "t" / "runs.superseded.jsonl")
    assert rec["config"]["optim"]["lr"] == 0.05 and old["config"]["optim"]["lr"] == 0.0001


def test_labels_that_collide_are_rejected_before_any_file(tmp_path, capsys):
    rows = [{"label": "ResNet (max)", "method": "resnet", "dataset": "synthetic"},
            {"label": "ResNet max", "method": "resnet", "dataset": "synthetic"}]
    out = tmp_path / "out"
    assert main(args(suite_file(tmp_path, rows), out)) == 2
    assert "'ResNet (max)' and 'ResNet max'" in capsys.readouterr().err
    assert not out.exists()


# 2. verified checkpoints ---------------------------------------------------------------------

def _tiny_fit(tmp_path, ckdir, log=lambda *_: None):
    from gmbench import config as C
    from gmbench import engine
    from gmbench.data import read_labels
    from gmbench.data.dataset import ImageDataset
    from gmbench.data.transforms import build_transform
    from gmbench.models.base import MLICModel

    class Lin(MLICModel):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 5)

        def forward(self, batch):
            return {"logits": self.fc(batch["image"].mean((2, 3)))}

    torch.manual_seed(0)
    sets = C.parse_set(tiny_sets(**{"train.ckpt_every_steps": 1, "train.keep_last": 100,
                                    "train.epochs": 2, "train.deterministic": True}))
    cfg = C.validate(C.compose("resnet", "synthetic", sets))
    labels = {s: read_labels("synthetic", tmp_path / "data", s, **cfg.data.model_dump(
        exclude={"name", "root"})) for s in ("train", "test")}
    tf = build_transform("plain", 32, True)
    model = Lin()
    res = engine.fit(model, ImageDataset(labels["train"], tf), ImageDataset(labels["test"], tf),
                     cfg, torch.device("cpu"), ckdir, method="Lin", log=log)
    return model, res


def test_corrupt_checkpoint_is_named_and_skipped_for_the_previous_intact_one(tmp_path):
    ref_model, ref = _tiny_fit(tmp_path, tmp_path / "ref")
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path / "ref")]
    assert names[-1] == "ckpt-e0002-s0000000.pt"
    # A folder that stopped at epoch 2, step 2; its newest checkpoint then took 21 bad bytes.
    ck = tmp_path / "ck"
    ck.mkdir()
    for n in names[: names.index("ckpt-e0001-s0000002.pt") + 1]:
        for suffix in ("", ".sha256"):
            (ck / (n + suffix)).write_bytes((tmp_path / "ref" / (n + suffix)).read_bytes())
    victim = ck / "ckpt-e0001-s0000002.pt"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2: len(data) // 2 + 21] = bytes(21)
    victim.write_bytes(bytes(data))
    logs = []
    model, res = _tiny_fit(tmp_path, ck, log=logs.append)
    assert any("ckpt-e0001-s0000002.pt is corrupt: sha256 mismatch" in x for x in logs), logs
    assert res["resumed_from"] == {"epoch": 1, "step": 1, "eval_pending": False}
    assert res["metrics"]["mAP"] == ref["metrics"]["mAP"]
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()):
        assert torch.equal(a, b)
    # every one corrupt: an error that lists them and says how to restart
    for p in checkpoint.list_checkpoints(ck):
        p.write_bytes(b"junk")
    with pytest.raises(checkpoint.CheckpointError, match=r"(?s)no intact checkpoint.*Delete"):
        _tiny_fit(tmp_path, ck)


def test_checkpoint_without_sidecar_is_not_trusted(tmp_path):
    p = tmp_path / "ckpt-e0000-s0000001.pt"
    torch.save({"epoch": 0}, p)  # written outside gmbench (or copied without its sidecar)
    with pytest.raises(checkpoint.CheckpointError, match="no .sha256 sidecar"):
        checkpoint.load(p)
    checkpoint.save_verified({"epoch": 0}, p)
    assert checkpoint.load(p)["epoch"] == 0


# 3. one writer -------------------------------------------------------------------------------

def _append_many(path, worker, n):
    for i in range(n):
        append_jsonl(path, {"worker": worker, "i": i})


def test_concurrent_appends_lose_nothing(tmp_path):
    path = tmp_path / "runs.jsonl"
    procs = [mp.get_context("fork").Process(target=_append_many, args=(path, w, 100)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    recs = read_jsonl(path)
    assert sorted((r["worker"], r["i"]) for r in recs) == [(w, i) for w in range(4) for i in range(100)]


HOLD = ("import sys; from pathlib import Path; from gmbench.launch.claims import Claims; "
        "c = Claims(Path(sys.argv[1])).try_claim(sys.argv[2]); print('held', flush=True); "
        "sys.stdin.readline(); c.release()")


def _run_id(suite, out):
    from gmbench import runner
    from gmbench.selection import split_overrides
    a = args(suite, out)
    spec = runner.load_suite(suite)
    common, per_row = split_overrides([a[i + 1] for i, x in enumerate(a) if x == "--set"], spec)
    return runner.plan(spec, common, row_overrides=per_row)[0].run_id


def test_a_run_held_by_another_process_is_left_to_it_or_waited_for(tmp_path):
    # Runs are claimed one by one (gmbench/launch/claims.py), no longer the whole folder. The
    # holder keeps the claim until told to let go: a real first run could finish before the
    # second one has imported torch on a loaded machine (seen in CI), which proves nothing.
    suite, out = suite_file(tmp_path), tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / "t" / "claims"),
                               _run_id(suite, out)], cwd=REPO, env=ENV,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = popen(args(suite, out))
        o, err = second.communicate(timeout=300)
        assert second.returncode == 0 and "1 of 1 runs are not finished" in o, o + err
        assert "gmbench status" in o
        assert not (out / "t" / "runs.jsonl").exists()
        waiting = popen(args(suite, out) + ["--wait"])
        time.sleep(1.0)
        assert waiting.poll() is None  # waits for the holder's run
    finally:
        holder.communicate("\n", timeout=60)  # let go
    o, e = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, e[-1500:]
    again = popen(args(suite, out))
    o, e = again.communicate(timeout=300)
    assert again.returncode == 0 and "1 of 1 runs already finished" in o, e[-1500:]
    assert len(read_jsonl(out / "t" / "runs.jsonl")) == 1


# 4. signals ----------------------------------------------------------------------------------

def test_sigterm_during_final_evaluation_exits_nonzero_and_resumes(tmp_path):
    suite = suite_file(tmp_path)
    # 2 training steps, then a long evaluation (800 test images)
    kw = {"data.n_train": 16, "data.n_test": 800, "train.ckpt_every_steps": 1, "train.deterministic": True}
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(args(suite, ref, **kw)) == 0
    proc = popen(args(suite, out, **kw))
    last = out / "t" / "checkpoints"
    assert wait_for(lambda: list(last.rglob("ckpt-e0000-s0000002.pt.sha256")), proc)
    time.sleep(0.3)  # inside the evaluation, which takes seconds
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM and "during evaluation" in err, err[-1500:]
    assert not (out / "t" / "runs.jsonl").exists() or not read_jsonl(out / "t" / "runs.jsonl")
    res = subprocess.run([sys.executable, "-m", "gmbench"] + args(suite, out, **kw), cwd=REPO,
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "epoch 1/1 is trained, evaluating it" in res.stdout, res.stderr[-1500:]
    a, = read_jsonl(out / "t" / "runs.jsonl")
    b, = read_jsonl(ref / "t" / "runs.jsonl")
    assert a["metrics"] == b["metrics"]


# 5. determinism for any worker count ---------------------------------------------------------

WORKER_KW = {"data.train_transform": "mlgcn", "data.n_train": 40, "train.epochs": 2,
             "train.deterministic": True, "train.ckpt_every_steps": 1, "train.keep_last": 100}


def _history(rec):
    return [(h["loss"], h["mAP"]) for h in rec["train"]["history"]]


def test_records_do_not_depend_on_num_workers_or_a_kill(tmp_path):
    suite = suite_file(tmp_path)
    recs = {}
    for w in (0, 1, 2):
        out = tmp_path / f"w{w}"
        assert main(args(suite, out, **WORKER_KW, **{"data.num_workers": w})) == 0
        recs[w], = read_jsonl(out / "t" / "runs.jsonl")
    for w in (1, 2):
        assert recs[w]["metrics"] == recs[0]["metrics"], w
        assert _history(recs[w]) == _history(recs[0]), w
    # 2 workers, SIGKILL mid-epoch 2, resumed: the same record as the uninterrupted runs
    out = tmp_path / "killed"
    proc = popen(args(suite, out, **WORKER_KW, **{"data.num_workers": 2}))
    assert wait_for(lambda: list((out / "t").rglob("ckpt-e0001-s0000002.pt.sha256")), proc)
    proc.kill()
    proc.wait(60)
    res = subprocess.run([sys.executable, "-m", "gmbench"] + args(
        suite, out, **WORKER_KW, **{"data.num_workers": 2}), cwd=REPO, env=ENV,
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "resuming epoch 2/2" in res.stdout, res.stderr[-1500:]
    rec, = read_jsonl(out / "t" / "runs.jsonl")
    assert rec["metrics"] == recs[0]["metrics"]
    assert _history(rec) == _history(recs[0])  # the resumed epoch's loss covers all its batches


# 7. skipped test images are visible ----------------------------------------------------------

def test_skipped_test_images_are_counted_and_announced(tmp_path, capsys):
    from gmbench.data import read_labels
    root = tmp_path / "data"
    test = read_labels("synthetic", root, "test", n_train=24, n_test=16, resolution=32, num_classes=5)
    for p in test.image_paths[:2]:
        p.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert main(args(suite_file(tmp_path), out, **{"data.root": str(root),
                                                    "data.skip_bad_images": True})) == 0
    assert "2 unreadable test image(s)" in capsys.readouterr().out
    rec, = read_jsonl(out / "t" / "runs.jsonl")
    assert rec["skipped_images"] == {"train": 0, "test": 2}
    assert rec["n_test"] == 14 and rec["n_test_listed"] == 16


# 8. clean errors -----------------------------------------------------------------------------

def test_records_file_with_a_foreign_line_is_a_clean_error(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "t").mkdir(parents=True)
    (out / "t" / "runs.jsonl").write_text('[1, 2]\n')
    assert main(args(suite_file(tmp_path), out)) == 1
    assert "runs.jsonl:1: expected a JSON object" in capsys.readouterr().err
    (out / "t" / "runs.jsonl").write_text('{"hello": 1}\n')
    assert main(args(suite_file(tmp_path), out)) == 1
    assert "record 1 lacks status" in capsys.readouterr().err


def test_every_checkpoint_corrupt_exits_1_naming_them(tmp_path, capsys):
    suite, out = suite_file(tmp_path), tmp_path / "out"
    assert main(args(suite, out)) == 0
    (out / "t" / "runs.jsonl").write_text("")
    for p in (out / "t" / "checkpoints").rglob("ckpt-*.pt"):
        p.write_bytes(p.read_bytes()[:-100])
    assert main(args(suite, out)) == 1
    err = capsys.readouterr().err
    assert "no intact checkpoint" in err and "ckpt-e0001-s0000000.pt" in err and "Delete" in err


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs",
                                            str(mnt)], capture_output=True).returncode:
        pytest.skip("needs root and mount to make a small file system")
    yield mnt
    subprocess.run(["umount", str(mnt)])


def test_full_disk_is_named_and_leaves_old_files_whole(tiny_fs):
    from gmbench.utils.io import DiskFull, atomic_torch_save
    target = tiny_fs / "ckpt.pt"
    atomic_torch_save({"w": torch.zeros(10)}, target)
    with pytest.raises(DiskFull, match=r"no space left on device to write .*ckpt.pt"):
        atomic_torch_save({"w": torch.zeros(1 << 20)}, target)  # 4 MB into 256 kB
    assert torch.load(target, weights_only=True)["w"].shape == (10,)
    assert [p.name for p in tiny_fs.iterdir()] == ["ckpt.pt"]


# 9. paths contained, 10. debris --------------------------------------------------------------

def test_suite_name_cannot_leave_the_output_folder(tmp_path, capsys):
    p = tmp_path / "evil.yaml"
    p.write_text(yaml.safe_dump({"name": "../../x", "rows": [
        {"label": "R", "method": "resnet", "dataset": "synthetic"}]}))
    out = tmp_path / "a" / "b" / "out"
    assert main(args(str(p), out)) == 2
    assert "cannot be used as a file name" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "x").exists()


def test_stale_temp_files_are_removed_at_start(tmp_path, capsys):
    suite, out = suite_file(tmp_path), tmp_path / "out"
    stale = [out / "t" / ".tmp-runs.jsonl.abc123", out / "t" / "checkpoints" / "x" / ".tmp-ckpt.pt.zz"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\0" * 1000)
    assert main(args(suite, out)) == 0
    assert not any(p.exists() for p in stale)
    assert "left by an interrupted write" in capsys.readouterr().out
    assert json.loads((out / "t" / "runs.jsonl").read_text())["status"] == "finished"


def test_the_sidecar_exists_before_the_checkpoint_does(tmp_path, monkeypatch):
    """A kill right after the rename must not leave a checkpoint without its sidecar (seen:
    SIGKILL between the two writes made the only checkpoint of a run unusable)."""
    import os as _os
    seen = []
    real = _os.replace

    def spy(src, dst):
        dst = Path(dst)
        if dst.suffix == ".pt":
            side = dst.with_name(dst.name + ".sha256")
            seen.append(side.exists() and side.read_text().strip() == sha256_file(src))
        return real(src, dst)

    monkeypatch.setattr(_os, "replace", spy)
    checkpoint.save(tmp_path, {"epoch": 1, "step": 0, "w": torch.ones(3)}, keep_last=1)
    assert seen == [True]
    assert checkpoint.load_latest(tmp_path)["epoch"] == 1
