"""Claims, the queue's order, exactly-once records, `gmbench status`, --dry-run cost and the
worker environments: the pieces of the fan-out, without training (tests/test_fanout.py
runs suites through --workers and SLURM)."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from gmbench.errors import ConfigError
from gmbench.launch import claims as C
from gmbench.launch.cost import run_cost
from gmbench.launch.queue import _next, prepare
from gmbench.launch.slurm import parse_time
from gmbench.launch.status import status_report
from gmbench.launch.workers import worker_envs
from gmbench.records import append_record
from gmbench.utils import progress
from gmbench.utils.io import read_jsonl


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def write_claim(folder, key, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    info = {"key": key, "token": "t-" + key, "host": socket.gethostname(), "pid": os.getpid(),
            "slurm_job": None, "started": time.time(), "beat": time.time(), "progress": {}}
    info.update(fields)
    (folder / f"{key}.json").write_text(json.dumps(info))
    return info


def test_a_claim_is_exclusive_until_released(tmp_path):
    cl = C.Claims(tmp_path, lease_s=60)
    a = cl.try_claim("run1", log=lambda m: None)
    assert a is not None and cl.try_claim("run1", log=lambda m: None) is None
    assert cl.holder("run1")["token"] == a.info["token"]
    a.release()
    assert not (tmp_path / "run1.json").exists() and cl.holder("run1") is None
    b = cl.try_claim("run1", log=lambda m: None)
    assert b is not None
    b.release()


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path):
    pid = dead_pid()
    write_claim(tmp_path, "run1", pid=pid)
    said = []
    c = C.Claims(tmp_path, lease_s=3600).try_claim("run1", log=said.append)
    assert c is not None and c.info["pid"] == os.getpid()
    assert said and f"process {pid}" in said[0] and "has exited" in said[0]
    assert not list(tmp_path.glob("*.stale-*"))  # the stale claim was moved away, then deleted
    c.release()


def test_a_live_holder_keeps_its_claim_until_its_lease_runs_out(tmp_path):
    # another host (pid unknowable here): only the heartbeat's age decides
    write_claim(tmp_path, "run1", host="elsewhere", pid=1)
    cl = C.Claims(tmp_path, lease_s=30)
    assert cl.try_claim("run1", log=lambda m: None) is None
    old = time.time() - 31
    write_claim(tmp_path, "run1", host="elsewhere", pid=1, beat=old)
    os.utime(tmp_path / "run1.json", (old, old))
    said = []
    c = cl.try_claim("run1", log=said.append)
    assert c is not None and "no heartbeat" in said[0]
    c.release()


def test_the_heartbeat_carries_progress_and_notices_a_takeover(tmp_path):
    progress.reset()
    cl = C.Claims(tmp_path, lease_s=60, beat_s=0.05)
    c = cl.try_claim("run1", log=lambda m: None)
    progress.report(epoch=1, step=3, epochs=4, steps_per_epoch=8)
    deadline = time.time() + 10
    while json.loads((tmp_path / "run1.json").read_text()).get("progress", {}).get("step") != 3:
        assert time.time() < deadline, "no beat carried the progress"
        time.sleep(0.02)
    write_claim(tmp_path, "run1", token="someone-else")  # taken over as stale
    while not c.lost:
        assert time.time() < deadline, "the holder did not notice"
        time.sleep(0.02)
    c.release()  # must not delete the new holder's claim
    assert json.loads((tmp_path / "run1.json").read_text())["token"] == "someone-else"
    progress.reset()


def test_a_record_is_appended_once_per_run_id(tmp_path):
    path = tmp_path / "runs.jsonl"
    rec = {"status": "finished", "suite": "s", "row": "A", "seed": 0, "config": {}, "run_id": "r1"}
    assert append_record(path, rec) is True
    assert append_record(path, dict(rec, metrics={"mAP": 0.1})) is False
    assert append_record(path, dict(rec, status="failed")) is True   # not a finished record
    assert append_record(path, dict(rec, run_id="r2")) is True
    assert [(r["run_id"], r["status"]) for r in read_jsonl(path)] == [
        ("r1", "finished"), ("r1", "failed"), ("r2", "finished")]


def tiny_runs(tmp_path, rows):
    from gmbench import runner
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "seeds": [0, 1], "rows": rows,
                                 "defaults": {"model": {"depth": 18, "pretrained": "none"}}}))
    suite = runner.load_suite(str(p))
    return suite, runner.plan(suite, {})


def test_rows_whose_stage_someone_else_holds_wait_while_others_are_claimed(tmp_path):
    from gmbench.launch.queue import stages_of
    suite, runs = tiny_runs(tmp_path, [
        {"label": "A", "method": "resnet", "dataset": "synthetic", "set": {"data.n_train": 20}},
        {"label": "B", "method": "resnet", "dataset": "synthetic", "set": {"data.n_train": 30}}])
    sd = tmp_path / "out" / "s"
    cl = C.Claims(sd / "claims", lease_s=60)
    a_stage = stages_of(runs[0], None)[0][0]
    assert a_stage != stages_of(runs[2], None)[0][0]  # B's data is other data
    write_claim(sd / "claims", a_stage)  # A's data is being generated (by a live process)
    got = []
    for _ in range(2):
        kind, run, claim = _next(runs, sd, cl, None, set(), time.time(), False, lambda m: None)
        assert kind == "run"
        got.append((run.row.label, run.seed))
    assert sorted(got) == [("B", 0), ("B", 1)]  # A's runs (listed first) were passed over
    kind, run, _ = _next(runs, sd, cl, None, set(), time.time(), False, lambda m: None)
    assert kind == "wait"   # A's rows wait for their stage; B's are held
    (sd / "claims" / f"{a_stage}.json").unlink()
    kind, run, _ = _next(runs, sd, cl, None, set(), time.time(), False, lambda m: None)
    assert kind == "run" and run.row.label == "A"


def test_status_names_each_state_and_exits_0_only_when_all_finished(tmp_path):
    suite, runs = tiny_runs(tmp_path, [{"label": "A", "method": "resnet", "dataset": "synthetic"},
                                       {"label": "B", "method": "resnet", "dataset": "synthetic"}])
    sd = tmp_path / "out" / "s"
    prepare("s", runs, sd, False, log=lambda m: None)
    fin, run, dead, fail = runs
    append_record(sd / "runs.jsonl", {"status": "finished", "suite": "s", "row": "A", "seed": 0,
                                      "config": {}, "run_id": fin.run_id, "metrics": {"mAP": 0.4321}})
    write_claim(sd / "claims", run.run_id, slurm_job=None,
                progress={"epoch": 1, "step": 5, "epochs": 4, "steps_per_epoch": 8})
    write_claim(sd / "claims", dead.run_id, pid=dead_pid())
    log = sd / "logs" / f"{fail.run_id}.log"
    log.parent.mkdir(parents=True)
    log.write_text("epoch 1\nTraceback (most recent call last):\nValueError: boom\n")
    C.Claims(sd / "claims").mark_failed(fail.run_id, "ValueError: boom", log)
    text, code = status_report(sd, lease_s=60)
    lines = text.splitlines()
    assert code == 1
    assert lines[0].startswith("finished") and "A seed 0" in lines[0] and "mAP 43.2" in lines[0]
    assert lines[1].startswith("running") and f"pid {os.getpid()}" in lines[1]
    assert "epoch 2/4 step 5/8" in lines[1] and "last beat 0 s ago" in lines[1]
    assert lines[2].startswith("stopped") and "has exited" in lines[2]
    assert lines[3].startswith("failed") and "ValueError: boom" in lines[3]
    assert "| ValueError: boom" in text  # the log's last lines
    assert lines[-1] == "4 runs: 1 finished, 1 running, 1 stopped, 1 failed"
    for r in runs[1:]:
        append_record(sd / "runs.jsonl", {"status": "finished", "suite": "s", "row": r.row.label,
                                          "seed": r.seed, "config": {}, "run_id": r.run_id,
                                          "metrics": {"mAP": 0.5}})
    text, code = status_report(sd, lease_s=60)
    assert code == 0 and text.splitlines()[-1] == "4 runs: 4 finished"


def test_a_table_marks_rows_with_missing_seeds(tmp_path):
    from gmbench.tables.model import build_table
    from gmbench.tables.notes import notes
    recs = [{"status": "finished", "suite": "s", "row": lab, "seed": sd, "method": "m",
             "dataset": "synthetic", "config": {}, "metrics": {"mAP": v},
             "table": {"columns": ["mAP"]}, "row_order": ["A", "B", "C"]}
            for lab, sd, v in (("A", 0, 0.5), ("A", 1, 0.7), ("B", 0, 0.4))]
    t = build_table(recs, planned={"A": [0, 1], "B": [0, 1, 2], "C": [0]})
    rows = {r["row"]: r for r in t.reproduced}
    assert set(rows) == {"A", "B [1 of 3 seeds]"}
    assert rows["A"]["values"]["mAP"][0] == pytest.approx(0.6)
    text = "\n".join(notes(t))
    assert "B [1 of 3 seeds]: mean over the finished seeds only; not finished: seed 1 and seed 2" in text
    assert "no finished run yet: C" in text


def test_dry_run_cost_by_hand(tmp_path):
    from gmbench import config as Cfg
    cfg = Cfg.validate(Cfg.compose("resnet", "coco2014", {}, {"train": {"epochs": 60}}))
    c = run_cost(cfg)
    # 60 epochs × 82,081 images at 215 img/s + 60 evaluations × 40,137 at 406 img/s (448 px)
    assert c["trained"] == 60 * 82081 and c["evaluated"] == 60 * 40137
    assert c["gpu_h"] == pytest.approx((60 * 82081 / 215 + 60 * 40137 / 406) / 3600)
    online = Cfg.validate(Cfg.compose("gm_mlic", "coco2014", {},
                                      {"model": {"features": "online"}, "train": {"epochs": 2}}))
    o = run_cost(online)
    assert o["detector"] == 2 * (82081 + 40137)
    assert o["gpu_h"] == pytest.approx((2 * 82081 / 353 + 2 * 40137 / 341
                                        + 2 * (82081 + 40137) / 100) / 3600)
    small = Cfg.validate(Cfg.compose("resnet", "synthetic", {},
                                     {"data": {"image_size": 224, "n_train": 100, "n_test": 50},
                                      "train": {"epochs": 3}}))
    s = run_cost(small)  # a quarter of the pixels: four times the rate
    assert s["gpu_h"] == pytest.approx((300 / (4 * 215) + 150 / (4 * 406)) / 3600)


def test_worker_environments_split_gpus_and_cores(monkeypatch):
    assert worker_envs(2, 1, cuda=False, cores=2) == [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}] * 2
    assert worker_envs(3, 1, cuda=False, cores=16)[0]["OMP_NUM_THREADS"] == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")
    envs = worker_envs(2, 2, cuda=True, cores=16)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3,5", "6,7"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in worker_envs(4, 1, cuda=True, cores=16)] == list("3567")
    with pytest.raises(ConfigError, match="needs 6 GPUs; 4 visible"):
        worker_envs(3, 2, cuda=True)


def test_slurm_time_limits():
    assert parse_time("90") == 90 and parse_time("1:30:00") == 90 and parse_time("2:05") == 125
    assert parse_time("1-00:00:00") == 1440
    with pytest.raises(ConfigError, match="--time-limit"):
        parse_time("soon")


def test_a_takeover_that_loses_the_race_puts_the_new_claim_back(tmp_path, monkeypatch):
    # The claim looked stale when read; by the rename another worker had replaced it
    # with a fresh one: that one must survive, and the takeover must give up.
    fresh = write_claim(tmp_path, "run1", token="fresh")
    stale = dict(fresh, token="old", pid=dead_pid())
    real, calls = C.read_claim, []

    def racy(path):
        calls.append(path)
        return dict(stale, mtime=time.time()) if len(calls) == 1 else real(path)
    monkeypatch.setattr(C, "read_claim", racy)
    assert C.Claims(tmp_path, lease_s=60).try_claim("run1", log=lambda m: None) is None
    assert json.loads((tmp_path / "run1.json").read_text())["token"] == "fresh"
    assert [p.name for p in tmp_path.iterdir()] == ["run1.json"]
