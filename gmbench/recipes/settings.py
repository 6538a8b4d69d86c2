"""The run config's ``loss:`` and ``optim:`` blocks, built from the registries.

Each block is its common keys (below) plus the union of the settings that the registered
entries bring (``gmbench.registry``: a loss's, an optimizer's, a schedule's own pydantic
model). So a new loss, optimizer or schedule with new settings is one file: its
registration and its settings; ``gmbench.config`` needs no edit. The YAML stays flat
(``loss: {name: asl, gamma_neg: 4}``): every registered key is valid whichever entry is
named, and keeps its default when not set, so the resolved config (and the run ids
hashed from it) lists every key.

The registries are complete only once every registering module is imported, so the
block models are built on first request (``gmbench.config`` asks when it is imported),
after ``gmbench.registry`` has loaded them, and cached. A key that is also a common key is an error here; two entries declaring
one key differently is an error at registration (``gmbench.registry``).
"""
from __future__ import annotations

import functools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from gmbench.registry import LOSSES, OPTIMIZERS, SCHEDULES, Registry, field_signature, suggest


def registered(registry: Registry, name: str, extra=()) -> str:
    """``name`` if ``registry`` has it (or it is in ``extra``), else a clear error."""
    valid = list(extra) + registry.names()
    if name not in valid:
        raise ValueError(f"unknown {registry.kind} {name!r}.{suggest(name, valid)} Valid: "
                         f"{', '.join(valid)} (`gmbench list` shows each one's settings)")
    return name


class LossCommon(BaseModel):
    """``loss:`` — ``default`` is the method's own loss (its ``default_loss``, bce for most)."""
    model_config = ConfigDict(extra="forbid")

    name: str = "default"           # default or a registered loss (`gmbench list`)
    # sum: over the batch's valid entries, as ASL's code; with Adam's coupled L2 weight decay
    # the reduction sets how strong the decay is against the loss gradient
    reduction: Literal["mean", "sum"] = "mean"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return registered(LOSSES, v, extra=("default",))

    @model_validator(mode="after")
    def _reduction_of_a_named_loss(self):
        if self.reduction == "sum" and self.name == "default":
            raise ValueError(f"loss.reduction=sum applies to a named loss ({', '.join(LOSSES.names())}); "
                             "a method's own loss sets its reduction itself")
        return self


class OptimCommon(BaseModel):
    """``optim:`` — the optimizer, its schedule and the keys every one of them reads."""
    model_config = ConfigDict(extra="forbid")

    name: str = "sgd"               # a registered optimizer (`gmbench list`)
    lr: float = Field(0.01, ge=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    backbone_lr_mult: float = Field(1.0, ge=0.0)
    scheduler: str = "step"         # a registered schedule (`gmbench list`)
    warmup_epochs: float = Field(0.0, ge=0)  # linear warm-up; onecycle: its rising part
    no_decay_norm_bias: bool = False  # no weight decay on biases and norm scales (ndim ≤ 1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return registered(OPTIMIZERS, v)

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v: str) -> str:
        return registered(SCHEDULES, v)


def block_model(model_name: str, common: type, *registries: Registry) -> type:
    """``common`` plus every registered entry's settings, as one strict pydantic model."""
    fields, owner = {}, {}
    for reg in registries:
        for entry in reg.entries():
            for key, field in (entry.config.model_fields.items() if entry.config else ()):
                where = f"{reg.kind} {entry.name!r}"
                if key in common.model_fields:
                    raise ValueError(f"{where} declares {reg.block}.{key}, a key common to every "
                                     f"{reg.kind}; give its setting another name")
                if key in fields and field_signature(fields[key][1]) != field_signature(field):
                    raise ValueError(f"{where} and {owner[key]} declare {reg.block}.{key} differently")
                fields.setdefault(key, (field.annotation, field))
                owner.setdefault(key, where)
    return create_model(model_name, __base__=common, __doc__=common.__doc__,
                        __module__="gmbench.config", **fields)


@functools.lru_cache(maxsize=None)
def loss_config() -> type:
    """The ``loss:`` block's model (``gmbench.config.LossConfig``)."""
    return block_model("LossConfig", LossCommon, LOSSES)


@functools.lru_cache(maxsize=None)
def optim_config() -> type:
    """The ``optim:`` block's model (``gmbench.config.OptimConfig``)."""
    return block_model("OptimConfig", OptimCommon, OPTIMIZERS, SCHEDULES)
