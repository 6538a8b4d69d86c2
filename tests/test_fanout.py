"""A suite's runs fanned out over worker processes and over a real (local) SLURM cluster.

One tiny suite (2 rows × 1 seed of ResNet-18 on synthetic data, deterministic CPU, a
checkpoint every step) is run once sequentially (the reference, session-scoped). Each
launcher must then (a) write every record exactly once, equal to the reference's metrics,
when two launches run at once, each run trained by one process only; (b) after one
worker process is SIGKILLed / one array task is scancel'd mid-run, finish that run from
its checkpoint (taken over by the other worker, or by the command issued again).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import subprocess_env

REPO = Path(__file__).resolve().parents[1]
SUITE = {
    "name": "fan", "seeds": [0],
    "defaults": {"data": {"n_train": 16, "n_test": 16, "image_size": 32, "resolution": 32,
                          "num_classes": 5, "num_workers": 0, "train_transform": "plain",
                          "test_transform": "plain"},
                 "model": {"depth": 18, "pretrained": "none"},
                 "train": {"epochs": 2, "batch_size": 8, "num_threads": 1, "deterministic": True,
                           "ckpt_every_steps": 1, "keep_last": 1}},
    "table": {"columns": ["mAP"], "chance": False},
    "rows": [{"label": "A", "method": "resnet", "dataset": "synthetic"},
             {"label": "B", "method": "resnet", "dataset": "synthetic", "set": {"optim.lr": 0.01}}],
}


@pytest.fixture(scope="session")
def suite_yaml(tmp_path_factory):
    p = tmp_path_factory.mktemp("fan-suite") / "fan.yaml"
    p.write_text(yaml.safe_dump(SUITE))
    return str(p)


def records(out):
    p = Path(out) / "fan" / "runs.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []


@pytest.fixture(scope="session")
def reference(suite_yaml, tmp_path_factory):
    """The sequential run: (row, seed) → metrics."""
    from gmbench.cli import main
    out = tmp_path_factory.mktemp("fan-ref")
    assert main(["run", "--suite", suite_yaml, "--out", str(out)]) == 0
    recs = records(out)
    assert len(recs) == 2
    return {(r["row"], r["seed"]): r["metrics"] for r in recs}


def gmbench(*argv):
    return subprocess.Popen([sys.executable, "-m", "gmbench", *argv], cwd=REPO,
                            env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def claims_in_logs(out):
    """run id → how many processes claimed it (one "claimed by" line each)."""
    logs = Path(out) / "fan" / "logs"
    return {p.stem: p.read_text().count("claimed by") for p in logs.glob("*.log")}


def check_once_and_equal(out, reference):
    recs = records(out)
    assert sorted((r["row"], r["seed"]) for r in recs) == sorted(reference)  # each exactly once
    for r in recs:
        assert r["metrics"] == reference[(r["row"], r["seed"])], r["row"]


def wait_for_checkpoint(out, procs, timeout=240):
    """A claim whose run has written a checkpoint and is still training: its claim dict."""
    folder = Path(out) / "fan"
    deadline = time.time() + timeout
    while time.time() < deadline:
        for c in (folder / "claims").glob("*.json") if (folder / "claims").is_dir() else []:
            if c.name.endswith((".failed.json", ".job.json")) or c.stem.startswith("stage-"):
                continue
            try:
                info = json.loads(c.read_text())
            except (OSError, ValueError):
                continue
            if list((folder / "checkpoints" / c.stem).glob("ckpt-e0000-s0000001.pt")):
                return info
        if procs and all(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    pytest.fail("no run reached its first checkpoint")


def run_lines(out):
    """`gmbench status` (in this process: a subprocess would take seconds to start)."""
    from gmbench.cli import main
    from contextlib import redirect_stdout
    import io
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["status", str(Path(out) / "fan")])
    return code, buf.getvalue()


# --workers -----------------------------------------------------------------------------------

def test_workers_two_launches_at_once_train_each_run_once(suite_yaml, reference, tmp_path):
    out = tmp_path / "out"
    a = gmbench("run", "--suite", suite_yaml, "--out", str(out), "--workers", "2")
    b = gmbench("run", "--suite", suite_yaml, "--out", str(out))
    (ra, oa), (rb, ob) = finish(a), finish(b)
    assert ra == 0 and rb == 0, oa[-2000:] + ob[-2000:]
    check_once_and_equal(out, reference)
    assert sorted(claims_in_logs(out).values()) == [1, 1]  # nobody trained a run twice
    code, text = run_lines(out)
    assert code == 0 and text.count("finished") == 3 and "2 runs: 2 finished" in text, text


def test_workers_a_killed_worker_s_run_resumes_from_its_checkpoint(suite_yaml, reference, tmp_path):
    out = tmp_path / "out"
    cmd = ("run", "--suite", suite_yaml, "--out", str(out), "--workers", "2")
    parent = gmbench(*cmd)
    victim = wait_for_checkpoint(out, [parent])
    os.kill(victim["pid"], signal.SIGKILL)
    rc, log = finish(parent)
    assert rc != 0, log[-2000:]  # one worker died
    if victim["key"] not in {r["run_id"] for r in records(out)}:
        code, text = run_lines(out)
        assert code == 1 and "stopped" in text and f"process {victim['pid']}" in text, text
    # else the other worker took the dead one's run over already, which is as good
    rc, log = finish(gmbench(*cmd))
    assert rc == 0, log[-3000:]
    text = (out / "fan" / "logs" / f"{victim['key']}.log").read_text()
    assert "resuming" in text and text.count("claimed by") == 2, text  # the killed one, the taker
    check_once_and_equal(out, reference)


# --launcher slurm ----------------------------------------------------------------------------

def test_slurm_two_launches_at_once_train_each_run_once(slurm_cluster, suite_yaml, reference,
                                                        tmp_path):
    out = tmp_path / "out"
    cmd = ("run", "--suite", suite_yaml, "--out", str(out), "--launcher", "slurm", "--wait")
    a, b = gmbench(*cmd), gmbench(*cmd)
    (ra, oa), (rb, ob) = finish(a), finish(b)
    assert ra == 0 and rb == 0, oa[-2000:] + ob[-2000:] + slurm_cluster.logs()
    assert "SLURM job" in oa + ob
    check_once_and_equal(out, reference)
    assert sorted(claims_in_logs(out).values()) == [1, 1], claims_in_logs(out)
    # re-issued with everything finished: nothing is submitted
    rc, log = finish(gmbench(*cmd))
    assert rc == 0 and "nothing to submit" in log, log[-2000:]


def test_slurm_scancel_then_reissue_resumes_from_the_checkpoint(slurm_cluster, suite_yaml,
                                                                reference, tmp_path):
    out = tmp_path / "out"
    cmd = ("run", "--suite", suite_yaml, "--out", str(out), "--launcher", "slurm")
    rc, log = finish(gmbench(*cmd))
    assert rc == 0 and log.count("submitted '") == 2, log[-2000:]
    victim = wait_for_checkpoint(out, [])
    assert victim["slurm_job"], victim
    subprocess.run(["scancel", victim["slurm_job"]], check=True, timeout=60)
    deadline = time.time() + 240
    while subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline, "the array did not end"
        time.sleep(0.5)
    assert victim["key"] not in {r["run_id"] for r in records(out)}  # cancelled mid-run
    rc, log = finish(gmbench(*cmd, "--wait"))
    assert rc == 0 and log.count("submitted '") == 1, log[-2000:]  # only the cancelled run
    assert "resuming" in (out / "fan" / "logs" / f"{victim['key']}.log").read_text()
    check_once_and_equal(out, reference)
