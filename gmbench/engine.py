"""The one training engine: every method trains and evaluates through ``fit``.

DETR-style split: ``train_one_epoch`` and ``evaluate`` do one pass each; ``fit``
owns epochs, checkpoints, resume (also mid-epoch), signals and the NaN guard.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import checkpoint
from .config import EvalConfig, OptimConfig, RunConfig
from .data.dataset import collate
from .models.base import MLICModel
from .utils import dist
from .utils.io import atomic_torch_save


class TrainingDiverged(RuntimeError):
    pass


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; a checkpoint was written at the step boundary."""

    def __init__(self, signum: int, path: Optional[Path]):
        super().__init__(f"stopped by signal {signum}; checkpoint {path}; re-run to resume")
        self.signum = signum


class ResumableSampler(DistributedSampler):
    """A DistributedSampler (also for one process) that can start mid-epoch.

    The permutation depends only on (seed, epoch), so after a restart the
    batches already trained are skipped without loading them.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, shuffle: bool, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def build_optimizer(model: MLICModel, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = model.param_groups(cfg.lr, cfg.backbone_lr_mult)
    for g in groups:
        g["initial_lr"] = g["lr"]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig):
    """Stepped once per epoch."""
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)


def to_device(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) if torch.is_tensor(v) else v for k, v in batch.items()}


def autocast(device: torch.device, cfg: RunConfig):
    if device.type == "cuda" and cfg.train.amp:
        return torch.autocast("cuda", dtype=getattr(torch, cfg.train.amp_dtype))
    return contextlib.nullcontext()


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                device: torch.device) -> DataLoader:
    sampler = ResumableSampler(dataset, dist.world_size(), dist.rank(), shuffle, seed)
    # Own generator: creating an iterator must not consume the global RNG (exact resume).
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate, pin_memory=device.type == "cuda", generator=gen,
                      persistent_workers=num_workers > 0, drop_last=False)


@dataclass
class TrainState:
    epoch: int = 0
    step: int = 0                 # batches of ``epoch`` already trained
    global_step: int = 0
    bad_steps: int = 0            # non-finite losses skipped, in total
    consecutive_bad: int = 0
    skipped_images: int = 0
    best: float = -math.inf
    history: List[Dict[str, float]] = field(default_factory=list)


class _SignalGuard:
    """Turns SIGINT/SIGTERM into a flag checked at step boundaries."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def train_one_epoch(model, loader, optimizer, scaler, device, cfg: RunConfig, state: TrainState,
                    on_step: Callable[[bool], None], method: str = "") -> float:
    """One pass over ``loader`` (which may start mid-epoch). Returns the mean loss."""
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}", leave=False,
               disable=not dist.is_main(), dynamic_ncols=True, initial=state.step,
               total=state.step + len(loader))
    for batch in bar:
        state.skipped_images += batch.get("n_skipped", 0)
        if batch.get("empty"):
            state.step += 1
            continue
        batch = to_device(batch, device)
        with autocast(device, cfg):
            out = model(batch)
            loss = (model.module if hasattr(model, "module") else model).loss(out, batch)
        good = False
        if not dist.all_true(bool(torch.isfinite(loss.detach()).item())):
            state.bad_steps += 1
            state.consecutive_bad += 1
            optimizer.zero_grad(set_to_none=True)
            if state.consecutive_bad >= cfg.train.max_bad_steps:
                raise TrainingDiverged(
                    f"{method}: {state.consecutive_bad} consecutive non-finite losses at epoch "
                    f"{state.epoch + 1}, step {state.step + 1}; the last good checkpoint is kept. "
                    f"Lower optim.lr or set train.clip_grad_norm.")
        else:
            state.consecutive_bad = 0
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.train.clip_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach())
            count += 1
            bar.set_postfix(loss=f"{total / count:.4f}")
            good = True
        state.step += 1
        state.global_step += 1
        on_step(good)
    return total / max(count, 1)


@torch.no_grad()
def predict(model, loader, device, cfg: RunConfig):
    """Per-image probabilities, gathered over ranks. Returns (index, probs, targets) numpy."""
    from .metrics import MetricAccumulator
    model.eval()
    core = model.module if hasattr(model, "module") else model
    acc = MetricAccumulator()
    for batch in tqdm(loader, desc="eval", leave=False, disable=not dist.is_main(), dynamic_ncols=True):
        if batch.get("empty"):
            continue
        batch = to_device(batch, device)
        with autocast(device, cfg):
            out = core(batch)
        # Outside autocast; the heads' last layers are float32 (models/base.py), so the scores
        # are not bf16-rounded (ties lower AP). float32 on every path, DDP gather included.
        probs = core.probs(out).float()
        acc.update(batch["index"].cpu(), probs.cpu(), batch["target_raw"].cpu())
    acc.gather()
    return acc


def evaluate(model, loader, device, cfg: RunConfig) -> Dict[str, Any]:
    """The metric layer's full dict (mAP, AP, CP ... OF1@k) on ``loader``."""
    e: EvalConfig = cfg.eval
    return predict(model, loader, device, cfg).compute(
        threshold=e.threshold, top_k=e.top_k, ap=e.ap, topk_mode=e.topk_mode)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def fit(model: MLICModel, train_set, test_set, cfg: RunConfig, device: torch.device,
        ckpt_dir: Path, method: str = "", log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train for ``cfg.train.epochs`` epochs, resuming from ``ckpt_dir`` if it holds a checkpoint.

    Returns dict(metrics, best_epoch, history, bad_steps, skipped_images, resumed_from,
    train_time_s, eval_time_s).
    """
    ckpt_dir = Path(ckpt_dir)
    model.to(device)
    core = model
    if dist.is_dist():
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=getattr(core, "ddp_find_unused", False))
    optimizer = build_optimizer(core, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim)
    use_scaler = device.type == "cuda" and cfg.train.amp and cfg.train.amp_dtype == "float16"
    # torch.amp.GradScaler appeared in torch 2.3; torch.cuda.amp's is deprecated from then on
    scaler = (torch.amp.GradScaler("cuda", enabled=use_scaler) if hasattr(torch.amp, "GradScaler")
              else torch.cuda.amp.GradScaler(enabled=use_scaler))
    state = TrainState()
    extra: Dict[str, Any] = {"last_metrics": None, "best_metrics": None}
    ck = checkpoint.load_latest(ckpt_dir)
    resumed_from = None
    if ck is not None:
        core.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        state = TrainState(**ck["state"])
        extra = ck["extra"]
        checkpoint.set_rng_state(ck["rng"])
        resumed_from = {"epoch": state.epoch, "step": state.step}
        log(f"[{method}] resuming from epoch {state.epoch + 1}, step {state.step}")

    bs = cfg.train.batch_size
    train_loader = make_loader(train_set, bs, True, cfg.seed, cfg.data.num_workers, device)
    test_loader = make_loader(test_set, cfg.eval.batch_size or bs, False, cfg.seed,
                              cfg.data.num_workers, device)

    def save_ckpt():
        if dist.is_main():
            checkpoint.save(ckpt_dir, {
                "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "state": state.__dict__, "extra": extra, "rng": checkpoint.rng_state(),
                "epoch": state.epoch, "step": state.step}, cfg.train.keep_last)
        dist.barrier()

    times = {"train": 0.0, "eval": 0.0}
    with _SignalGuard() as guard:
        def on_step(good: bool):
            """After each step: periodic checkpoint (never right after a skipped step)."""
            every = cfg.train.ckpt_every_steps
            stop = not dist.all_true(guard.signum is None)
            if good and (stop or (every and state.global_step % every == 0)):
                save_ckpt()
            if stop:
                raise Interrupted(guard.signum or signal.SIGTERM,
                                  (checkpoint.list_checkpoints(ckpt_dir) or [None])[-1])

        while state.epoch < cfg.train.epochs:
            train_loader.sampler.set_epoch(state.epoch)
            train_loader.sampler.set_start(state.step * bs)
            t0 = time.perf_counter()
            loss = train_one_epoch(model, train_loader, optimizer, scaler, device, cfg, state,
                                   on_step, method)
            scheduler.step()
            t1 = time.perf_counter()
            metrics = evaluate(model, test_loader, device, cfg)
            t2 = time.perf_counter()
            times["train"] += t1 - t0
            times["eval"] += t2 - t1
            state.epoch += 1
            state.step = 0
            row = {"epoch": state.epoch, "loss": loss, "mAP": metrics["mAP"],
                   "train_s": round(t1 - t0, 3), "eval_s": round(t2 - t1, 3)}
            state.history.append(row)
            extra["last_metrics"] = metrics
            if metrics["mAP"] > state.best:
                state.best = metrics["mAP"]
                extra["best_metrics"] = dict(metrics, epoch=state.epoch)
                if dist.is_main():
                    atomic_torch_save({"model": core.state_dict(), "epoch": state.epoch,
                                       "mAP": state.best}, ckpt_dir / "best.pt")
            save_ckpt()
            if dist.is_main():
                log(f"[{method}] epoch {state.epoch}/{cfg.train.epochs} loss {loss:.4f} "
                    f"mAP {100 * metrics['mAP']:.1f} ({row['train_s']:.1f}s train, "
                    f"{row['eval_s']:.1f}s eval)")
    if extra["last_metrics"] is None:  # epochs == 0: evaluate the initial model
        extra["last_metrics"] = evaluate(model, test_loader, device, cfg)
    best = extra["best_metrics"] or {}
    return {"metrics": extra["last_metrics"], "best_epoch": best.get("epoch"),
            "best_mAP": best.get("mAP"), "history": state.history, "bad_steps": state.bad_steps,
            "skipped_images": state.skipped_images, "resumed_from": resumed_from,
            "train_time_s": round(times["train"], 3), "eval_time_s": round(times["eval"], 3)}
