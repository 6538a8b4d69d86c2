"""Optimizers: ``OPTIMIZERS.get(name).fn(groups, optim_cfg) -> torch.optim.Optimizer``.

``build_optimizer`` makes the parameter groups once for all: the method's
``param_groups`` (backbone at lr·backbone_lr_mult) and, with ``no_decay_norm_bias``, each
group split in two so that biases and normalisation scales (every parameter with
ndim ≤ 1) get no weight decay, as most recipes since 2018 do.

A new optimizer is one ``@register_optimizer(name, settings=...)`` function; its settings
become ``optim:`` keys (``lr``, ``weight_decay`` and the rest of
``gmbench.recipes.settings.OptimCommon`` are every optimizer's).
"""
from __future__ import annotations

from typing import Annotated, List

import torch
from pydantic import AfterValidator, BaseModel, Field

from gmbench.registry import OPTIMIZERS, register_optimizer


def _two_betas(v: List[float]) -> List[float]:
    if len(v) != 2 or not all(0.0 <= b < 1.0 for b in v):
        raise ValueError("expected two numbers in [0, 1), e.g. [0.9, 0.999]")
    return v


class SGDSettings(BaseModel):
    momentum: float = Field(0.9, ge=0.0, lt=1.0)


class AdamSettings(BaseModel):
    betas: Annotated[List[float], AfterValidator(_two_betas)] = [0.9, 0.999]


@register_optimizer("sgd", settings=SGDSettings)
def _sgd(groups, cfg):
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@register_optimizer("adam", settings=AdamSettings)
def _adam(groups, cfg):
    return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


@register_optimizer("adamw", settings=AdamSettings)
def _adamw(groups, cfg):
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def split_no_decay(groups: List[dict]) -> List[dict]:
    """Each group → (decayed, ndim ≤ 1 with weight_decay 0); empty halves are dropped."""
    out = []
    for g in groups:
        decay = [p for p in g["params"] if p.ndim > 1]
        flat = [p for p in g["params"] if p.ndim <= 1]
        if decay:
            out.append({**g, "params": decay})
        if flat:
            out.append({**g, "params": flat, "weight_decay": 0.0, "name": f"{g.get('name', 'group')}/no_decay"})
    return out


def build_optimizer(model, cfg) -> torch.optim.Optimizer:
    groups = model.param_groups(cfg.lr, cfg.backbone_lr_mult)
    if getattr(cfg, "no_decay_norm_bias", False):
        groups = split_no_decay(groups)
    for g in groups:
        g["initial_lr"] = g["lr"]
    return OPTIMIZERS.get(cfg.name).fn(groups, cfg)
