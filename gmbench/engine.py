"""The one training engine: every method trains and evaluates through ``fit``.

DETR-style split: ``train_one_epoch`` and ``evaluate`` do one pass each; ``fit``
owns epochs, checkpoints, resume (also mid-epoch), signals and the NaN guard.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import recipes
from .utils import checkpoint
from .config import EvalConfig, OptimConfig, RunConfig
from .data.dataset import collate
from .models.base import MLICModel
from .utils import dist, progress, signals, tracking
from .utils.signals import Interrupted  # noqa: F401  (re-exported: the engine raises it)
from .errors import TrainingDiverged  # noqa: F401  (re-exported: raised here)


def stop_requested() -> bool:
    """True on every rank once any rank has caught SIGINT/SIGTERM (a collective under DDP)."""
    return not dist.all_true(signals.received() is None)


class ResumableSampler(DistributedSampler):
    """A DistributedSampler (also for one process) that can start mid-epoch.

    The permutation depends only on (seed, epoch), so after a restart the
    batches already trained are skipped without loading them. With
    ``with_epoch`` it yields ``(index, epoch)`` keys, from which the dataset seeds
    each sample's augmentation: the randomness of sample i in epoch e is then a
    function of (seed, e, i) alone, whatever the worker count or resume point.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, shuffle: bool, seed: int,
                 with_epoch: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.start = 0
        self.with_epoch = with_epoch

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self):
        order = list(super().__iter__())[self.start:]
        return iter([(i, self.epoch) for i in order] if self.with_epoch else order)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def build_optimizer(model: MLICModel, cfg: OptimConfig) -> torch.optim.Optimizer:
    return recipes.build_optimizer(model, cfg)


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int = 1,
                    epochs: int = 1):
    """Stepped once per training iteration (see gmbench.recipes.schedules)."""
    return recipes.build_scheduler(opt, cfg, steps_per_epoch, epochs)


def to_device(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) if torch.is_tensor(v) else v for k, v in batch.items()}


def autocast(device: torch.device, cfg: RunConfig):
    if device.type == "cuda" and cfg.train.amp:
        return torch.autocast("cuda", dtype=getattr(torch, cfg.train.amp_dtype))
    return contextlib.nullcontext()


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                device: torch.device) -> DataLoader:
    """Training loaders (``shuffle``) pass (index, epoch) keys to datasets that take them."""
    keyed = shuffle and getattr(dataset, "accepts_epoch_keys", False)
    sampler = ResumableSampler(dataset, dist.world_size(), dist.rank(), shuffle, seed, with_epoch=keyed)
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
    # this epoch's running sums, checkpointed so a resumed epoch's loss covers all its batches
    loss_sum: float = 0.0
    loss_count: int = 0
    epoch_skipped: int = 0        # unreadable training images skipped so far this epoch
    skipped_train: int = 0        # ... in the last complete epoch (each epoch sees every image)
    eval_pending: bool = False    # epoch ``epoch`` is trained; its evaluation has not finished
    best: float = -math.inf
    history: List[Dict[str, float]] = field(default_factory=list)


def train_one_epoch(model, loader, optimizer, scaler, device, cfg: RunConfig, state: TrainState,
                    on_step: Callable[[bool], None], method: str = "", loss_fn=None,
                    scheduler=None, ema=None) -> float:
    """One pass over ``loader`` (which may start mid-epoch). Returns the epoch's mean loss,
    over all its batches (the sums before a resume come from the checkpoint).

    ``loss_fn(out, batch)`` defaults to the method's own loss; ``scheduler`` is stepped after
    every batch (skipped ones too); ``ema`` is updated after every optimizer step."""
    core = _unwrap(model)
    loss_fn = loss_fn or core.loss
    model.train()
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}", leave=False,
               disable=not dist.is_main(), dynamic_ncols=True, initial=state.step,
               total=state.step + len(loader))
    for batch in bar:
        state.epoch_skipped += batch.get("n_skipped", 0)
        if batch.get("empty"):
            state.step += 1
            state.global_step += 1
            if scheduler is not None:
                scheduler.step()
            continue
        batch = to_device(batch, device)
        if cfg.train.channels_last:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg):
            out = model(batch)
        loss = loss_fn(out, batch)
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
            if ema is not None:
                ema.update(core)
            state.loss_sum += float(loss.detach())
            state.loss_count += 1
            bar.set_postfix(loss=f"{state.loss_sum / state.loss_count:.4f}")
            good = True
        state.step += 1
        state.global_step += 1
        if scheduler is not None:
            scheduler.step()
        on_step(good)
    return state.loss_sum / max(state.loss_count, 1)


@torch.no_grad()
def predict(model, loader, device, cfg: RunConfig):
    """Per-image probabilities, gathered over ranks. Returns (index, probs, targets) numpy."""
    from .metrics import MetricAccumulator
    model.eval()
    core = model.module if hasattr(model, "module") else model
    acc = MetricAccumulator()
    acc.n_skipped = 0
    for batch in tqdm(loader, desc="eval", leave=False, disable=not dist.is_main(), dynamic_ncols=True):
        if stop_requested():
            signals.check("evaluation")
        acc.n_skipped += batch.get("n_skipped", 0)
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


def evaluate(model, loader, device, cfg: RunConfig, keep: Optional[Dict[str, Any]] = None
             ) -> Dict[str, Any]:
    """The metric layer's full dict (mAP, AP, CP ... OF1@k) on ``loader``, plus
    ``n_evaluated`` and ``n_skipped`` (unreadable test images left out, summed over ranks).
    ``keep``: filled with the evaluated rows, index int64 [M], probs float32 [M, C] and
    targets int8 [M, C] (dataset order), for the run's predictions file."""
    e: EvalConfig = cfg.eval
    acc = predict(model, loader, device, cfg)
    if keep is not None:
        keep["index"], keep["probs"], keep["targets"] = acc.state()
    out = acc.compute(threshold=e.threshold, top_k=e.top_k, ap=e.ap, topk_mode=e.topk_mode,
                      difficult=e.difficult)
    out["n_evaluated"] = acc.n_samples() or 0
    out["n_skipped"] = dist.sum_int(acc.n_skipped)
    return out


def _unwrap(model):
    """The plain module under DDP (``.module``) or torch.compile (``._orig_mod``)."""
    for attr in ("_orig_mod", "module"):
        model = getattr(model, attr, model)
    return model


def fit(model: MLICModel, train_set, test_set, cfg: RunConfig, device: torch.device,
        ckpt_dir: Path, method: str = "", log: Callable[[str], None] = print,
        tb_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Train for ``cfg.train.epochs`` epochs, resuming from ``ckpt_dir`` if it holds a checkpoint.

    Returns dict(metrics, best_epoch, best_mAP, best_metrics, history, bad_steps,
    skipped_images {train, test}, n_evaluated, resumed_from, train_time_s, eval_time_s,
    predictions {index [M], probs [M, C], targets [M, C]} of the final evaluation).
    SIGINT/SIGTERM (see ``gmbench.utils.signals``) checkpoint at the next step boundary,
    or, during evaluation, keep the trained epoch, and raise :class:`Interrupted`.
    """
    ckpt_dir = Path(ckpt_dir)
    model.to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    core = model
    if dist.is_dist():
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=getattr(core, "ddp_find_unused", False))
    bs = cfg.train.batch_size
    train_loader = make_loader(train_set, bs, True, cfg.seed, cfg.data.num_workers, device)
    test_loader = make_loader(test_set, cfg.eval.batch_size or bs, False, cfg.seed,
                              cfg.data.num_workers, device)
    steps_per_epoch = math.ceil(train_loader.sampler.num_samples / bs)
    optimizer = build_optimizer(core, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch, cfg.train.epochs)
    loss_fn = recipes.build_loss(cfg.loss, core)
    ema = recipes.ModelEma(core, cfg.train.ema) if cfg.train.ema is not None else None
    # compiled forward for training and evaluation; state dicts stay those of ``core``
    runner = torch.compile(model) if cfg.train.compile else model
    use_scaler = device.type == "cuda" and cfg.train.amp and cfg.train.amp_dtype == "float16"
    # torch.amp.GradScaler appeared in torch 2.3; torch.cuda.amp's is deprecated from then on
    scaler = (torch.amp.GradScaler("cuda", enabled=use_scaler) if hasattr(torch.amp, "GradScaler")
              else torch.cuda.amp.GradScaler(enabled=use_scaler))
    state = TrainState()
    extra: Dict[str, Any] = {"last_metrics": None, "best_metrics": None, "raw_metrics": None}
    ck = checkpoint.load_latest(ckpt_dir, log=log)
    resumed_from = None
    if ck is not None:
        core.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        if ema is not None:
            if ck.get("ema") is None:
                raise checkpoint.CheckpointError(
                    f"{ckpt_dir}: the checkpoint has no EMA state but train.ema={cfg.train.ema}")
            ema.load_state_dict_ema(ck["ema"])
        known = TrainState.__dataclass_fields__
        state = TrainState(**{k: v for k, v in ck["state"].items() if k in known})
        extra = {"raw_metrics": None, **ck["extra"]}
        checkpoint.set_rng_state(ck["rng"])
        resumed_from = {"epoch": state.epoch, "step": state.step, "eval_pending": state.eval_pending}
        log(f"[{method}] {_resume_message(state, cfg.train.epochs)}")
    evaluated = ema.module if ema is not None else runner  # the weights whose metrics are reported
    writer = tracking.open_writer(cfg.train.tensorboard and dist.is_main(),
                                  Path(tb_dir) if tb_dir else ckpt_dir / "tb")

    def save_ckpt():
        if dist.is_main():
            checkpoint.save(ckpt_dir, {
                "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "ema": ema.state_dict_ema() if ema is not None else None,
                "state": state.__dict__, "extra": extra, "rng": checkpoint.rng_state(),
                "epoch": state.epoch, "step": state.step}, cfg.train.keep_last)
        dist.barrier()

    times = {"train": 0.0, "eval": 0.0}
    final_preds: Dict[str, Any] = {}  # the last evaluation's per-image rows

    def on_step(good: bool):
        """After each step: periodic checkpoint (never right after a skipped step)."""
        every = cfg.train.ckpt_every_steps
        progress.report(epoch=state.epoch, step=state.step, epochs=cfg.train.epochs,
                        steps_per_epoch=steps_per_epoch)  # read by a claim's heartbeat
        stop = stop_requested()
        if good and (stop or (every and state.global_step % every == 0)):
            save_ckpt()
        if stop:
            signals.check("training", (checkpoint.list_checkpoints(ckpt_dir) or [None])[-1])

    with signals.guard():
        while state.epoch < cfg.train.epochs:
            t0 = time.perf_counter()
            if not state.eval_pending:
                train_loader.sampler.set_epoch(state.epoch)
                train_loader.sampler.set_start(state.step * bs)
                train_one_epoch(runner, train_loader, optimizer, scaler, device, cfg, state,
                                on_step, method, loss_fn=loss_fn, scheduler=scheduler, ema=ema)
                state.skipped_train = dist.sum_int(state.epoch_skipped)
                state.eval_pending = True
            t1 = time.perf_counter()
            try:
                metrics = evaluate(evaluated, test_loader, device, cfg, keep=final_preds)
                raw = evaluate(runner, test_loader, device, cfg) if ema is not None else None
            except Interrupted as e:
                save_ckpt()  # the trained epoch is kept; a rerun only evaluates it
                raise Interrupted(e.signum, "evaluation",
                                  checkpoint.list_checkpoints(ckpt_dir)[-1]) from None
            t2 = time.perf_counter()
            times["train"] += t1 - t0
            times["eval"] += t2 - t1
            loss = state.loss_sum / max(state.loss_count, 1)
            state.epoch += 1
            state.step, state.loss_sum, state.loss_count, state.epoch_skipped = 0, 0.0, 0, 0
            state.eval_pending = False
            row = {"epoch": state.epoch, "loss": loss, "mAP": metrics["mAP"],
                   "lr": optimizer.param_groups[-1]["lr"],
                   "train_s": round(t1 - t0, 3), "eval_s": round(t2 - t1, 3)}
            if raw is not None:
                row["raw_mAP"] = raw["mAP"]
                extra["raw_metrics"] = {k: v for k, v in raw.items() if k != "AP"}
                # Both models' summary metrics per epoch: the authors of ASL and ML-Decoder
                # report max(raw, EMA) at the best epoch (tables: --select best_of_ema).
                row["metrics"] = {k: v for k, v in metrics.items() if k != "AP"}
                row["metrics_raw"] = extra["raw_metrics"]
            state.history.append(row)
            extra["last_metrics"] = metrics
            tracking.log_epoch(writer, state.epoch, row, metrics, raw)
            if metrics["mAP"] > state.best:
                state.best = metrics["mAP"]
                extra["best_metrics"] = dict(metrics, epoch=state.epoch)
                if dist.is_main():
                    checkpoint.save_verified({"model": _unwrap(evaluated).state_dict(), "epoch": state.epoch,
                                              "mAP": state.best}, ckpt_dir / "best.pt")
            save_ckpt()
            if dist.is_main():
                log(f"[{method}] epoch {state.epoch}/{cfg.train.epochs} loss {loss:.4f} "
                    f"mAP {100 * metrics['mAP']:.1f} ({row['train_s']:.1f}s train, "
                    f"{row['eval_s']:.1f}s eval)")
    if writer is not None:
        writer.close()
    if extra["last_metrics"] is None or not final_preds:
        # epochs == 0 (the initial model), or resumed after the final evaluation, whose
        # per-image rows the checkpoint does not hold: evaluate the final weights (again)
        extra["last_metrics"] = evaluate(evaluated, test_loader, device, cfg, keep=final_preds)
    best = dict(extra["best_metrics"] or {})
    last = extra["last_metrics"]
    return {"metrics": last, "best_epoch": best.pop("epoch", None), "best_mAP": best.get("mAP"),
            "best_metrics": best or None, "history": state.history, "bad_steps": state.bad_steps,
            "skipped_images": {"train": state.skipped_train, "test": last.get("n_skipped", 0)},
            "n_evaluated": last.get("n_evaluated"), "resumed_from": resumed_from,
            "recipe": {"loss": recipes.resolve_loss_name(cfg.loss, core), "optimizer": cfg.optim.name,
                       "scheduler": cfg.optim.scheduler, "ema": cfg.train.ema,
                       "evaluated": "ema" if ema is not None else "raw"},
            "raw_metrics": extra.get("raw_metrics"), "predictions": final_preds,
            "train_time_s": round(times["train"], 3), "eval_time_s": round(times["eval"], 3)}


def _resume_message(state: TrainState, epochs: int) -> str:
    if state.eval_pending:
        return f"resuming: epoch {state.epoch + 1}/{epochs} is trained, evaluating it"
    if state.epoch >= epochs:
        return f"all {epochs} epochs were already trained; writing the record"
    return f"resuming epoch {state.epoch + 1}/{epochs} at step {state.step}"
