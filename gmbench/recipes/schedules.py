"""LR schedules, all stepped once per training iteration (skipped and empty batches too,
so the schedule position is always ``global_step``):
``SCHEDULES.get(name).fn(optimizer, optim_cfg, steps_per_epoch, epochs) -> LRScheduler``.

* ``none``       constant.
* ``step``       × gamma every ``step_size`` epochs (at epoch boundaries, as before).
* ``multistep``  × gamma at each epoch in ``milestones``.
* ``cosine``     half a cosine per iteration from the base lr to base·``min_lr_ratio``.
* ``onecycle``   ``torch.optim.lr_scheduler.OneCycleLR`` with max_lr = each group's lr; the
                 rising part lasts ``warmup_epochs`` (0 → torch's default 30 %); momentum cycles
                 where the optimizer has one.
``warmup_epochs`` > 0 adds a linear warm-up (from 1/W of the lr over W iterations) to the
others. State (the iteration count) is in the scheduler's state_dict, so a mid-epoch
resume continues the schedule exactly.
"""
from __future__ import annotations

import bisect
import math

import torch

from gmbench.registry import Registry

SCHEDULES = Registry("scheduler")


class Multiplier:
    """lr factor f(iteration) for LambdaLR; plain attributes so LambdaLR can checkpoint it."""

    def __init__(self, kind: str, spe: int, total: int, warmup: int, gamma: float = 0.1,
                 step_size: int = 1, milestones=(), min_ratio: float = 0.0):
        self.kind, self.spe, self.total, self.warmup = kind, spe, total, warmup
        self.gamma, self.step_size, self.milestones, self.min_ratio = gamma, step_size, list(milestones), min_ratio

    def __call__(self, it: int) -> float:
        epoch = it // self.spe
        if self.kind == "step":
            f = self.gamma ** (epoch // self.step_size)
        elif self.kind == "multistep":
            f = self.gamma ** bisect.bisect_right(self.milestones, epoch)
        elif self.kind == "cosine":
            t = min(it, self.total) / max(self.total, 1)
            f = self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        else:
            f = 1.0
        if self.warmup and it < self.warmup:
            f *= (it + 1) / self.warmup
        return f


def _lambda(kind):
    def build(opt, cfg, spe, epochs):
        m = Multiplier(kind, spe, spe * epochs, round(cfg.warmup_epochs * spe), gamma=cfg.gamma,
                       step_size=cfg.step_size, milestones=cfg.milestones, min_ratio=cfg.min_lr_ratio)
        return torch.optim.lr_scheduler.LambdaLR(opt, m)
    return build


for _kind in ("none", "step", "multistep", "cosine"):
    SCHEDULES.register(_kind)(_lambda(_kind))


class _OneCycle(torch.optim.lr_scheduler.OneCycleLR):
    """OneCycleLR whose state_dict holds only data: torch 2.2 keeps the annealing function
    (a bound method) in it, which ``torch.load(weights_only=True)`` refuses."""

    def state_dict(self):
        return {k: v for k, v in super().state_dict().items() if not callable(v)}


@SCHEDULES.register("onecycle")
def _onecycle(opt, cfg, spe, epochs):
    total = max(spe * epochs, 2)
    pct = min(cfg.warmup_epochs / epochs, 0.99) if cfg.warmup_epochs and epochs else 0.3
    has_momentum = any("betas" in g or g.get("momentum", 0) > 0 for g in opt.param_groups)
    return _OneCycle(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total, pct_start=pct,
        cycle_momentum=has_momentum)


def build_scheduler(opt, cfg, steps_per_epoch: int, epochs: int):
    return SCHEDULES.get(cfg.scheduler).fn(opt, cfg, max(int(steps_per_epoch), 1), max(int(epochs), 1))
