"""Multi-label losses: ``LOSSES.get(name).fn(loss_cfg, model) -> fn(logits, target) -> scalar``.

Every loss takes logits [B, C] and targets [B, C] in {1, 0, -1}, ignores the -1 entries
and averages over the rest (mean reduction everywhere, so learning rates carry over
between losses). ``loss.reduction: sum`` sums instead, as ASL's code does: for SGD or
AdamW only a rescaled gradient, but with Adam's coupled L2 weight decay (ASL, ML-Decoder)
it sets the decay's weight against the loss. ``build_loss`` runs the loss in float32
outside autocast, whatever the forward pass ran in.

``loss.name: default`` is the method's own ``model.loss(out, batch)``; its registered name
is the model's ``default_loss`` attribute (``bce`` unless the method says otherwise).

A new loss is one function with ``@register_loss(name, settings=...)``, here or in the
method's own package (GM-MLIC's ``weighted_bce`` registers from
``gmbench/models/gm_mlic/loss.py``); its settings become ``loss:`` keys. The factory
receives the model, so a method's loss may read what its model keeps (GM-MLIC's label
ratios); a generic loss ignores it.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from gmbench.models.base import masked_bce_with_logits
from gmbench.registry import LOSSES, register_loss

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def asymmetric_loss(logits: torch.Tensor, target: torch.Tensor, gamma_neg: float, gamma_pos: float,
                    clip: float, alpha: float = None, focal_grad: bool = False) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al., ICCV 2021), mean over entries whose target is not -1.

    p = σ(x); positives: −(1−p)^γ+ · log p; negatives: −p_m^γ− · log(1−p_m) with the shifted
    probability p_m = max(p − clip, 0). With γ+ = γ− = γ and clip = 0 this is the focal loss;
    ``alpha`` (focal only) weighs positives by α and negatives by 1−α.

    ``focal_grad``: whether the gradient flows through the focusing weights (1−p)^γ+ and
    p_m^γ−. False treats them as constants, as the ASL, ML-Decoder and Query2Label code
    does (``disable_torch_grad_focal_loss``): the value is the same, but a negative's
    gradient then lacks the term γ−·p_m^(γ−−1)·p(1−p)·log(1−p_m). True is the exact
    derivative of the value, as in the focal-loss paper (Lin et al., ICCV 2017).
    logits, target [B, C] → scalar.
    """
    valid = (target >= 0).to(logits.dtype)
    y = target.clamp(min=0).to(logits.dtype)
    p = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    if clip > 0:
        p_neg = (p - clip).clamp(min=0)
        log_1m_neg = torch.log((1 - p_neg).clamp(min=1e-8))
    else:  # exact log(1 − p) through logsigmoid(−x): finite for very confident logits
        p_neg, log_1m_neg = p, F.logsigmoid(-logits)
    w_pos = (1 - p).pow(gamma_pos) if gamma_pos else torch.ones_like(p)
    w_neg = p_neg.pow(gamma_neg) if gamma_neg else torch.ones_like(p)
    if not focal_grad:
        w_pos, w_neg = w_pos.detach(), w_neg.detach()
    pos, neg = w_pos * log_p, w_neg * log_1m_neg
    if alpha is not None:
        pos, neg = alpha * pos, (1 - alpha) * neg
    loss = -(y * pos + (1 - y) * neg)
    return (loss * valid).sum() / valid.sum().clamp(min=1.0)


class AslSettings(BaseModel):
    gamma_neg: float = Field(4.0, ge=0)    # γ−
    gamma_pos: float = Field(0.0, ge=0)    # γ+
    clip: float = Field(0.05, ge=0, lt=1)  # probability margin on negatives
    # differentiate through the focusing weights; False: the authors' default (asymmetric_loss)
    focal_grad: bool = False


class FocalSettings(BaseModel):
    gamma: float = Field(2.0, ge=0)
    alpha: Optional[float] = Field(None, ge=0, le=1)  # positive weight (None: unweighted)
    focal_grad: bool = False  # one loss.focal_grad key with asl's (Lin et al.'s focal: true)


@register_loss("bce")
def _bce(cfg, model) -> LossFn:
    return masked_bce_with_logits


@register_loss("asl", settings=AslSettings)
def _asl(cfg, model) -> LossFn:
    return lambda x, t: asymmetric_loss(x, t, cfg.gamma_neg, cfg.gamma_pos, cfg.clip,
                                        focal_grad=cfg.focal_grad)


@register_loss("focal", settings=FocalSettings)
def _focal(cfg, model) -> LossFn:
    return lambda x, t: asymmetric_loss(x, t, cfg.gamma, cfg.gamma, 0.0, cfg.alpha,
                                        focal_grad=cfg.focal_grad)


def resolve_loss_name(cfg, model) -> str:
    """The registered name of the loss that runs (``default`` → the method's ``default_loss``)."""
    return getattr(model, "default_loss", "bce") if cfg.name == "default" else cfg.name


def build_loss(cfg, model) -> Callable[[Dict[str, torch.Tensor], Dict[str, torch.Tensor]], torch.Tensor]:
    """``loss(out, batch) -> scalar`` for the engine: float32, autocast off."""
    if cfg.name == "default":
        own = model.loss
        fn = lambda out, batch: own({**out, "logits": out["logits"].float()}, batch)  # noqa: E731
    else:
        core = LOSSES.get(cfg.name).fn(cfg, model)
        fn = lambda out, batch: core(out["logits"].float(), batch["target"])  # noqa: E731
        if getattr(cfg, "reduction", "mean") == "sum":  # the mean × the entries it averaged
            mean_fn = fn
            fn = lambda out, batch: mean_fn(out, batch) * (batch["target"] >= 0).sum().clamp(min=1)  # noqa: E731

    def loss(out, batch):
        dev = out["logits"].device.type
        off = torch.autocast(dev, enabled=False) if dev in ("cuda", "cpu") else contextlib.nullcontext()
        with off:
            return fn(out, batch)
    return loss
