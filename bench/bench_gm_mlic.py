"""GM-MLIC graph throughput: forward+backward graphs/s of the ILMS head (cache mode:
instance features given), DGL vs dense, at VOC size (M=10, C=20) and COCO size
(M=35, C=80), batch 32, paper dims (enc 256, modules [512, 256]).

  python bench/bench_gm_mlic.py                                  # CPU: DGL and dense
  python bench/bench_gm_mlic.py --device cuda --amp bf16         # GPU: dense in bf16 autocast

Every image has M valid instances (the paper's fixed top-m). FLOPs per graph are the
matmul FLOPs of one forward+backward counted by torch.utils.flop_counter.FlopCounterMode
(elementwise and DGL sparse work not counted) divided by the batch; the dense backend
does the still image-independent label work (label encoders, first label-graph message)
once per batch, DGL once per image, so their counts differ. The script also times a large
matmul (bf16 with --amp bf16, else fp32) on the same device as the peak it compares against.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

os.environ.setdefault("DGLBACKEND", "pytorch")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gmbench.graph import dgl_runs_on  # noqa: E402
from gmbench.models.gm_mlic import GMMLIC, GMMLICConfig  # noqa: E402

SIZES = {"voc": (10, 20), "coco": (35, 80)}


def make(M: int, C: int, B: int, dims, enc: int, feat_dim: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    word = np.random.default_rng(seed).standard_normal((C, 300)).astype(np.float32)
    cfg = GMMLICConfig(features="cache", feat_dim=feat_dim, enc_dim=enc, dims=list(dims),
                       top_m=M, backend="dense")
    torch.manual_seed(seed)
    model = GMMLIC(cfg, word, np.full(C, 0.1)).to(device)
    xy = torch.rand(B, M, 2, generator=g) * 0.7
    batch = {"boxes": torch.cat([xy, xy + 0.05 + torch.rand(B, M, 2, generator=g) * 0.25], -1),
             "box_mask": torch.ones(B, M, dtype=torch.bool),
             "inst_feat": torch.randn(B, M, feat_dim, generator=g),
             "target": (torch.rand(B, C, generator=g) < 0.1).float()}
    return model, {k: v.to(device) for k, v in batch.items()}


def step(model, batch, amp):
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with ctx:
        out = model(batch)
    model.loss(out, batch).backward()


def timed(model, batch, amp, iters, warmup, device):
    for _ in range(warmup):
        model.zero_grad(set_to_none=True)
        step(model, batch, amp)
    times = []
    for _ in range(iters):
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step(model, batch, amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def count_flops(model, batch, amp) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as fc:
        step(model, batch, amp)
    return float(fc.get_total_flops())


def matmul_peak(device, dtype, n: int, iters: int = 10) -> float:
    """Measured dense matmul FLOP/s on ``device`` (n×n @ n×n in ``dtype``)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync()
    return 2 * n ** 3 * iters / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument("--sizes", default="voc,coco")
    ap.add_argument("--backends", default=None, help="default: dgl,dense on CPU; dense on CUDA")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dims", default="512,256")
    ap.add_argument("--enc-dim", type=int, default=256)
    ap.add_argument("--feat-dim", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0 = default)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = args.amp == "bf16"
    if amp and device.type != "cuda":
        ap.error("--amp bf16 is for --device cuda")
    backends = (args.backends or ("dense" if device.type == "cuda" else "dgl,dense")).split(",")
    dims = [int(d) for d in args.dims.split(",")]
    cuda = device.type == "cuda"
    pdtype = torch.bfloat16 if amp else torch.float32
    peak = matmul_peak(device, pdtype, 8192 if cuda else 2048)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    pname = "bf16" if amp else "fp32"
    print(f"# device: {name}; torch {torch.__version__}; batch {args.batch}; enc {args.enc_dim}; "
          f"dims {dims}; amp {args.amp}; measured {pname} matmul peak {peak / 1e12:.3f} TFLOP/s")
    print("| size | M | C | backend | ms/step (fwd+bwd) | graphs/s | GFLOP/graph (matmul) "
          f"| achieved TFLOP/s | % of {pname} matmul peak |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes.split(","):
        M, C = SIZES[size]
        model, batch = make(M, C, args.batch, dims, args.enc_dim, args.feat_dim, device)
        for be in backends:
            if be == "dgl":
                ok, why = dgl_runs_on(device)
                if not ok:
                    print(f"| {size} | {M} | {C} | dgl | skipped: {why} | | | | |")
                    continue
            model.backend = be
            flops = count_flops(model, batch, amp)   # per backend: DGL repeats label work per image
            t = timed(model, batch, amp, args.iters, args.warmup, device)
            assert model.record["backend"] == be
            print(f"| {size} | {M} | {C} | {be} | {t * 1e3:.1f} | {args.batch / t:.1f} | "
                  f"{flops / args.batch / 1e9:.2f} | {flops / t / 1e12:.3f} | "
                  f"{100 * flops / t / peak:.1f} |", flush=True)
        del model, batch


if __name__ == "__main__":
    main()
