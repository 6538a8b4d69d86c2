"""The CUDA path: dense GM-MLIC, autocast, the engine and every registered method on a GPU.

Skipped without CUDA (CI has none); bench/gpu_session.sh runs it on a lent GPU.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_sets
from gmbench.metrics import evaluate
from gmbench.registry import list_models
from test_registry_methods import NUM_CLASSES, tiny_batch, tiny_info, tiny_model_cfg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def _gm_mlic(seed=0, **over):
    from gmbench.models.gm_mlic import GMMLIC, GMMLICConfig
    cfg = GMMLICConfig(**{"features": "cache", "feat_dim": 64, "enc_dim": 32, "dims": [48, 24],
                          "top_m": 6, "backend": "dense", **over})
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    return GMMLIC(cfg, rng.standard_normal((NUM_CLASSES, 300)).astype(np.float32),
                  np.full(NUM_CLASSES, 0.3))


def _batch(b=4, m=6, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, m, 2, generator=g) * 0.6
    mask = torch.ones(b, m, dtype=torch.bool)
    mask[1, 4:] = False  # padded slots
    return {"boxes": torch.cat([xy, xy + 0.1 + torch.rand(b, m, 2, generator=g) * 0.3], -1),
            "box_mask": mask, "inst_feat": torch.randn(b, m, d, generator=g),
            "target": (torch.rand(b, NUM_CLASSES, generator=g) < 0.4).float()}


def _to(batch, device, dtype=None):
    return {k: (v.to(device, dtype) if dtype is not None and v.is_floating_point() else v.to(device))
            for k, v in batch.items()}


def test_dense_gm_mlic_on_cuda_matches_cpu_float64():
    ref = _gm_mlic().double()
    gpu = copy.deepcopy(ref).float().to(CUDA)
    batch = _batch()
    out_ref = ref(_to(batch, "cpu", torch.float64))
    ref.loss(out_ref, _to(batch, "cpu", torch.float64)).backward()
    out_gpu = gpu(_to(batch, CUDA))
    gpu.loss(out_gpu, _to(batch, CUDA)).backward()
    torch.testing.assert_close(gpu.probs(out_gpu).cpu().double(), ref.probs(out_ref),
                               rtol=1e-4, atol=1e-5)
    for (name, p_ref), p_gpu in zip(ref.named_parameters(), gpu.parameters()):
        if p_ref.grad is not None:
            torch.testing.assert_close(p_gpu.grad.cpu().double(), p_ref.grad, rtol=1e-3, atol=1e-5,
                                       msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_forward_backward_is_finite_and_close(dtype):
    model = _gm_mlic().to(CUDA)
    batch = _to(_batch(), CUDA)
    with torch.no_grad():
        full = model.probs(model(batch))
    with torch.autocast("cuda", dtype=dtype):
        out = model(batch)
        loss = model.loss(out, batch)
    probs = model.probs(out)
    assert torch.isfinite(out["logits"].float()).all() and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert (probs - full).abs().max().item() < 0.05


@pytest.mark.parametrize("name", list_models())
def test_every_method_trains_a_step_on_cuda_in_bf16(name):
    torch.manual_seed(0)
    entry, cfg = tiny_model_cfg(name)
    model = entry.fn(cfg, tiny_info()).to(CUDA)
    batch = _to(tiny_batch(model), CUDA)
    opt = torch.optim.SGD(model.param_groups(0.01, 0.01), lr=0.01)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(batch)
        loss = model.loss(out, batch)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    probs = model.probs(out)
    assert probs.shape == (2, NUM_CLASSES) and probs.is_cuda


def test_metrics_take_cuda_tensors():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(300, NUM_CLASSES, generator=g)
    t = (torch.rand(300, NUM_CLASSES, generator=g) < 0.3).float()
    a = evaluate(p.to(CUDA), t.to(CUDA))
    b = evaluate(p.numpy(), t.numpy())
    assert a == b or all(np.allclose(a[k], b[k], equal_nan=True, rtol=0, atol=0) for k in a)
    bf = evaluate(p.to(CUDA, torch.bfloat16), t.to(CUDA))  # no numpy bf16: widened on the way
    assert bf.keys() == a.keys()


@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16"])
def test_runner_trains_on_cuda_with_amp(tmp_path, amp_dtype):
    """Two suite rows on the GPU through the CLI (float16 takes the GradScaler path)."""
    from gmbench.cli import main
    from gmbench.utils.io import read_jsonl
    suite = tmp_path / "gpu_tiny.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "gpu_tiny", "seeds": [0],
        "defaults": {"model": {"depth": 18, "pretrained": "none"}},
        "rows": [{"label": "ResNet-18", "method": "resnet", "dataset": "synthetic"},
                 {"label": "GM-MLIC e2e", "method": "gm_mlic", "dataset": "synthetic",
                  "set": {"model.features": "e2e", "model.top_m": 4,
                          "model.instance_source": "boxes"}}]}))
    sets = tiny_sets(**{"train.amp": "true", "train.amp_dtype": amp_dtype, "train.epochs": 2})
    argv = ["run", "--suite", str(suite), "--out", str(tmp_path / "out"), "--device", "cuda"]
    assert main(argv + [x for s in sets for x in ("--set", s)]) == 0
    records = read_jsonl(tmp_path / "out" / "gpu_tiny" / "runs.jsonl")
    assert [r["row"] for r in records] == ["ResNet-18", "GM-MLIC e2e"]
    for rec in records:
        assert 0.0 <= rec["metrics"]["mAP"] <= 1.0
        assert rec["environment"]["device"].startswith("cuda")
    assert records[1]["model_record"]["backend"] == "dense"  # no DGL build for current CUDA
