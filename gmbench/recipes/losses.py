"""Multi-label losses: ``LOSSES.get(name).fn(loss_cfg, model) -> fn(logits, target) -> scalar``.

Every loss takes logits [B, C] and targets [B, C] in {1, 0, -1}, ignores the -1 entries
and averages over the rest (mean reduction everywhere, so learning rates carry over
between losses). ``loss.reduction: sum`` sums instead, as ASL's code does: for SGD or
AdamW only a rescaled gradient, but with Adam's coupled L2 weight decay (ASL, ML-Decoder)
it sets the decay's weight against the loss. ``build_loss`` runs the loss in float32
outside autocast, whatever the forward pass ran in.

``loss.name: default`` is the method's own ``model.loss(out, batch)``; its registered name
is the model's ``default_loss`` attribute (``bce`` unless the method says otherwise).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict

import torch
import torch.nn.functional as F

from gmbench.models.base import masked_bce_with_logits
from gmbench.models.gm_mlic.loss import weighted_bce_from_logits
from gmbench.registry import Registry

LOSSES = Registry("loss")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def asymmetric_loss(logits: torch.Tensor, target: torch.Tensor, gamma_neg: float, gamma_pos: float,
                    clip: float, alpha: float = None) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al., ICCV 2021), mean over entries whose target is not -1.

    p = σ(x); positives: −(1−p)^γ+ · log p; negatives: −p_m^γ− · log(1−p_m) with the shifted
    probability p_m = max(p − clip, 0). With γ+ = γ− = γ and clip = 0 this is the focal loss;
    ``alpha`` (focal only) weighs positives by α and negatives by 1−α.
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
    pos = (1 - p).pow(gamma_pos) * log_p if gamma_pos else log_p
    neg = p_neg.pow(gamma_neg) * log_1m_neg if gamma_neg else log_1m_neg
    if alpha is not None:
        pos, neg = alpha * pos, (1 - alpha) * neg
    loss = -(y * pos + (1 - y) * neg)
    return (loss * valid).sum() / valid.sum().clamp(min=1.0)


@LOSSES.register("bce")
def _bce(cfg, model) -> LossFn:
    return masked_bce_with_logits


@LOSSES.register("asl")
def _asl(cfg, model) -> LossFn:
    return lambda x, t: asymmetric_loss(x, t, cfg.gamma_neg, cfg.gamma_pos, cfg.clip)


@LOSSES.register("focal")
def _focal(cfg, model) -> LossFn:
    return lambda x, t: asymmetric_loss(x, t, cfg.gamma, cfg.gamma, 0.0, cfg.alpha)


@LOSSES.register("weighted_bce")
def _weighted_bce(cfg, model) -> LossFn:
    """GM-MLIC's Eq. 15; needs the training label ratios r_c (``model.ratios`` [C])."""
    ratios = getattr(model, "ratios", None)
    if ratios is None:
        raise ValueError(f"loss.name=weighted_bce needs the training label ratios, which "
                         f"{type(model).__name__} does not keep (model.ratios); use bce, asl or focal")
    beta = cfg.beta if cfg.beta is not None else getattr(getattr(model, "cfg", None), "beta", 0.4)
    return lambda x, t: weighted_bce_from_logits(x, t, ratios, beta)


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
