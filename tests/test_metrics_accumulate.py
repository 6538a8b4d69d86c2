"""MetricAccumulator: batched and 2-rank (gloo) accumulation equal one-shot evaluate()."""
from __future__ import annotations

import datetime
import json
import time

import numpy as np
import pytest

from gmbench.metrics import MetricAccumulator, evaluate
from test_metrics import GOOD_P, GOOD_T, _quiet, _random, _same


def test_accumulator_batches_with_duplicates_equal_one_shot():
    p, t = _random(12, 37, 5, ties=True, ignored=0.1)
    rng = np.random.default_rng(1)
    order = np.concatenate([rng.permutation(37), [3, 0, 36]])  # padded repeats
    acc = MetricAccumulator()
    for s in range(0, len(order), 8):
        i = order[s:s + 8]
        acc.update(i, p[i], t[i])
    assert len(acc) == 40 and acc.n_samples() == 37
    idx, p2, t2 = acc.state()
    assert idx.tolist() == list(range(37))
    np.testing.assert_array_equal(p2, p)
    for kw in ({}, {"ap": "voc_interpolated", "topk_mode": "pure", "top_k": 2}):
        _same(acc.compute(**kw), evaluate(p, t, **kw))
    assert acc.gather() is acc  # no process group: a no-op


def test_accumulator_errors():
    acc = MetricAccumulator()
    with pytest.raises(ValueError, match="empty"):
        acc.compute()
    acc.update([0, 1], GOOD_P[:2], GOOD_T[:2])
    with pytest.raises(ValueError, match="3 classes but earlier batches had 2"):
        acc.update([2], np.full((1, 3), 0.5), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="one entry per row"):
        acc.update([2, 3, 4], GOOD_P[:2], GOOD_T[:2])
    with pytest.raises(ValueError, match="integers"):
        acc.update(np.array([2.0, 3.0]), GOOD_P[:2], GOOD_T[:2])
    acc.update([1], np.full((1, 2), 0.5), np.ones((1, 2)))
    with pytest.raises(ValueError, match="index 1 was added twice with different targets"):
        acc.compute()


N_DDP, C_DDP = 11, 4


def _ddp_data():
    p, t = _random(13, N_DDP, C_DDP, ties=True, ignored=0.1)
    return p.astype(np.float32), t


def _ddp_worker(rank, world, init_file, out_dir):
    """One gloo rank: DistributedSampler shards (padded by repeats), batches of 2."""
    import torch
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        p, t = _ddp_data()
        sampler = DistributedSampler(list(range(N_DDP)), num_replicas=world, rank=rank,
                                     shuffle=True, seed=5)
        idx = list(sampler)
        acc = MetricAccumulator()
        for s in range(0, len(idx), 2):
            i = idx[s:s + 2]
            acc.update(torch.tensor(i), torch.from_numpy(p[i]), torch.from_numpy(t[i]).float())
        res = {"n": acc.gather().n_samples(), "default": _quiet(acc.compute),
               "voc": _quiet(acc.compute, ap="voc_interpolated", topk_mode="pure")}
        lone = MetricAccumulator()  # only rank 0 has data
        if rank == 0:
            lone.update([4, 2], p[[4, 2]], t[[4, 2]])
        res["lone"] = _quiet(lone.gather().compute)
        bad = MetricAccumulator()  # rank 1 holds a clash: every rank must raise, none hang
        bad.update([rank], p[[rank]], t[[rank]])
        if rank == 1:
            bad.update([1], p[[1]], 1 - np.abs(t[[1]]))
        try:
            bad.gather()
            res["clash"] = None
        except ValueError as exc:
            res["clash"] = str(exc)
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(res, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_accumulator_gather_two_gloo_ranks(tmp_path):
    torch = pytest.importorskip("torch")
    import torch.multiprocessing as mp
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed not available")
    ctx = mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                   join=False)
    deadline = time.monotonic() + 240  # a hang must fail the test, not the whole suite
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("gloo workers did not finish within 240 s")
    p, t = _ddp_data()
    want = {"default": _quiet(evaluate, p, t),
            "voc": _quiet(evaluate, p, t, ap="voc_interpolated", topk_mode="pure"),
            "lone": _quiet(evaluate, p[[2, 4]], t[[2, 4]])}
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["n"] == N_DDP
        assert ("added twice with different targets" if rank else "failed on rank(s) [1]") \
            in got["clash"]
        for k in want:
            _same(got[k], want[k])
