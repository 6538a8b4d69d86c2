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

A new schedule is one ``@register_schedule(name, settings=...)`` function; its settings
become ``optim:`` keys (a key another schedule or optimizer declares must agree with it).
"""
from __future__ import annotations

import bisect
import math
from typing import List

import torch
from pydantic import BaseModel, Field

from gmbench.registry import SCHEDULES, register_schedule


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


class StepSettings(BaseModel):
    step_size: int = Field(30, ge=1)     # epochs between decays
    gamma: float = Field(0.1, gt=0.0)    # lr factor at each decay


class MultiStepSettings(BaseModel):
    milestones: List[int] = []           # epochs at which lr ×= gamma
    gamma: float = Field(0.1, gt=0.0)


class CosineSettings(BaseModel):
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # final lr / base lr


def _lambda(kind, **own):
    """A LambdaLR of ``Multiplier(kind)``; ``own`` maps Multiplier's arguments to the
    entry's own ``optim:`` keys."""
    def build(opt, cfg, spe, epochs):
        m = Multiplier(kind, spe, spe * epochs, round(cfg.warmup_epochs * spe),
                       **{arg: getattr(cfg, key) for arg, key in own.items()})
        return torch.optim.lr_scheduler.LambdaLR(opt, m)
    return build


register_schedule("none")(_lambda("none"))
register_schedule("step", settings=StepSettings)(_lambda("step", gamma="gamma", step_size="step_size"))
register_schedule("multistep", settings=MultiStepSettings)(
    _lambda("multistep", gamma="gamma", milestones="milestones"))
register_schedule("cosine", settings=CosineSettings)(_lambda("cosine", min_ratio="min_lr_ratio"))


class _OneCycle(torch.optim.lr_scheduler.OneCycleLR):
    """OneCycleLR whose state_dict holds only data: torch 2.2 keeps the annealing function
    (a bound method) in it, which ``torch.load(weights_only=True)`` refuses."""

    def state_dict(self):
        return {k: v for k, v in super().state_dict().items() if not callable(v)}


@register_schedule("onecycle")
def _onecycle(opt, cfg, spe, epochs):
    total = max(spe * epochs, 2)
    pct = min(cfg.warmup_epochs / epochs, 0.99) if cfg.warmup_epochs and epochs else 0.3
    has_momentum = any("betas" in g or g.get("momentum", 0) > 0 for g in opt.param_groups)
    return _OneCycle(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total, pct_start=pct,
        cycle_momentum=has_momentum)


def build_scheduler(opt, cfg, steps_per_epoch: int, epochs: int):
    return SCHEDULES.get(cfg.scheduler).fn(opt, cfg, max(int(steps_per_epoch), 1), max(int(epochs), 1))
