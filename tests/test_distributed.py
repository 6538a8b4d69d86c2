"""DDP on CPU with gloo: exact 2-rank evaluation, torchrun training, worker restart."""
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
import torch
import torch.distributed as tdist
import yaml

from conftest import subprocess_env, tiny_sets
from gmbench import config as C
from gmbench import engine
from gmbench.data import read_labels
from gmbench.data.dataset import ImageDataset
from gmbench.data.transforms import build_transform
from gmbench.utils.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]
ENV = subprocess_env(OMP_NUM_THREADS="1")


def _build(cfg):
    from gmbench.registry import METHODS
    from test_registry_methods import tiny_info
    torch.manual_seed(0)
    return METHODS.get("resnet").fn(cfg.model, tiny_info(c=5))


def _evaluate(cfg, data_root):
    test = read_labels("synthetic", data_root, "test", **cfg.data.model_dump(exclude={"name", "root"}))
    ds = ImageDataset(test, build_transform("plain", cfg.data.image_size, False))
    loader = engine.make_loader(ds, 4, False, 0, 0, torch.device("cpu"))
    return engine.evaluate(_build(cfg), loader, torch.device("cpu"), cfg)


def _worker(rank, world, init_file, cfg_json, data_root, out_file):
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    cfg = C.validate(json.loads(cfg_json))
    m = _evaluate(cfg, data_root)
    if rank == 0:
        Path(out_file).write_text(json.dumps(m))
    tdist.destroy_process_group()


def _cfg():
    return C.validate(C.compose("resnet", "synthetic", C.parse_set(
        tiny_sets(**{"data.n_test": 15, "model.depth": 18, "model.pretrained": "none"}))))


def test_two_rank_evaluation_equals_single_process(tmp_path):
    cfg = _cfg()
    data_root = tmp_path / "data"
    torch.set_num_threads(1)
    single = _evaluate(cfg, data_root)       # also generates the data before the workers start
    out = tmp_path / "m.json"
    torch.multiprocessing.spawn(_worker, args=(2, str(tmp_path / "pg"), json.dumps(C.to_dict(cfg)),
                                               str(data_root), str(out)), nprocs=2, join=True)
    multi = json.loads(out.read_text())
    assert multi.keys() == single.keys()
    for k in single:
        assert multi[k] == pytest.approx(single[k], nan_ok=True, abs=1e-6), k


def _collectives_worker(rank, world, init_file, out_file):
    from gmbench.utils import dist
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    agreed = [dist.all_true(rank == 0 or i % 3 != 0) for i in range(30)]
    got = [dist.broadcast_object({"rank": rank, "step": i, "pair": (1, 2)}) for i in range(30)]
    dist.shutdown()  # hung at exit in about half of the runs before collectives kept their tensors
    Path(f"{out_file}.{rank}").write_text(json.dumps({"agreed": agreed, "got": got}))


def test_collectives_agree_and_the_group_shuts_down(tmp_path):
    ctx = torch.multiprocessing.spawn(_collectives_worker, args=(2, str(tmp_path / "pg"), str(tmp_path / "r")),
                                      nprocs=2, join=False)
    deadline = time.time() + 120
    while not ctx.join(timeout=1):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("a rank did not exit within 120 s after dist.shutdown()")
    for rank in range(2):
        res = json.loads((tmp_path / f"r.{rank}").read_text())
        assert res["agreed"] == [i % 3 != 0 for i in range(30)]
        assert res["got"] == [{"rank": 0, "step": i, "pair": [1, 2]} for i in range(30)]


def _attempt_worker(rank, world, port, attempt, out_file):
    # What torchrun >= 2.4 gives a worker: the agent's shared store and the restart count.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      TORCHELASTIC_USE_AGENT_STORE="True", TORCHELASTIC_RESTART_COUNT=str(attempt))
    from gmbench.utils import dist
    assert dist.init_from_env("cpu")
    got = dist.broadcast_object({"attempt": attempt})
    dist.shutdown()
    Path(f"{out_file}.{attempt}.{rank}").write_text(json.dumps(got))


def test_restarted_workers_ignore_the_previous_attempts_keys_in_a_shared_store(tmp_path):
    """The agent's store outlives a killed attempt, gloo addresses included. A restarted
    rank must not read the dead rank 0's address (gloo: connectFullMesh, Connection refused)."""
    server = tdist.TCPStore("127.0.0.1", 0, 3, True, timedelta(seconds=60), wait_for_workers=False)
    for attempt in (0, 1):
        torch.multiprocessing.spawn(_attempt_worker, nprocs=2, join=True,
                                    args=(2, server.port, attempt, str(tmp_path / "r")))
        for rank in range(2):
            assert json.loads((tmp_path / f"r.{attempt}.{rank}").read_text()) == {"attempt": attempt}


def suite_file(tmp_path):
    doc = {"name": "d", "seeds": [0], "defaults": {"model": {"depth": 18, "pretrained": "none"}},
           "rows": [{"label": "R", "method": "resnet", "dataset": "synthetic"}]}
    p = tmp_path / "d.yaml"
    p.write_text(yaml.safe_dump(doc))
    return str(p)


def torchrun(tmp_path, out, *extra, **sets):
    s = tiny_sets(**{"data.n_train": 32, "train.batch_size": 4, "train.global_batch_size": 8, **sets})
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *extra,
            "-m", "gmbench", "run", "--suite", suite_file(tmp_path), "--out", str(out)] + \
        [x for v in s for x in ("--set", v)]


def test_torchrun_two_ranks_write_one_record(tmp_path):
    out = tmp_path / "out"
    res = subprocess.run(torchrun(tmp_path, out), cwd=REPO, env=ENV, capture_output=True, text=True,
                         timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    recs = read_jsonl(out / "d" / "runs.jsonl")
    assert len(recs) == 1
    assert recs[0]["world_size"] == 2 and recs[0]["global_batch_size"] == 8
    assert (out / "d" / "table.md").exists()


def test_torchrun_restarts_killed_worker_and_resumes(tmp_path):
    out = tmp_path / "out"
    cmd = torchrun(tmp_path, out, "--max-restarts=1",
                   **{"train.epochs": 3, "train.ckpt_every_steps": 1})
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    ckdir = out / "d" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not list(ckdir.rglob("ckpt-e0001-*.pt")):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if "gmbench" in " ".join(p.cmdline())]
    assert len(workers) == 2
    workers[-1].kill()
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    recs = read_jsonl(out / "d" / "runs.jsonl")
    assert len(recs) == 1 and recs[0]["train"]["resumed_from"]["epoch"] >= 1
