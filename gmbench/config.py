"""Layered, validated configuration.

Layers, later wins: configs/defaults.yaml → configs/datasets/<dataset>.yaml →
configs/methods/<method>.yaml → suite ``defaults`` → suite row ``set`` → ``--set``.
The ``data:`` block is validated by the registered dataset's config class and the
``model:`` block by the registered method's, so every key is checked (path, type,
nearest valid keys) before any work starts.
"""
from __future__ import annotations

import difflib
from typing import Any, Dict, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .detector.config import DetectorTrainConfig
from .pretrain.config import SyntheticPretrainConfig
from .registry import DATASETS, METHODS, UnknownNameError
from .config_files import (_explain, available, config_root, deep_merge,  # noqa: F401
                           dotted_to_nested, load_yaml, named_yaml, parse_set)
from .errors import ConfigError  # noqa: F401  (re-exported: raised here)
from .recipes.settings import loss_config, optim_config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ``loss:`` and ``optim:``: their common keys plus the settings every registered loss,
# optimizer and schedule declares with its registration (gmbench/recipes/settings.py), so a
# new one needs no edit here. Built here, after the builders load the registries: importing
# this module imports every registering module (torch included), as RunConfig's defaults
# below need the complete blocks.
LossConfig = loss_config()
OptimConfig = optim_config()


class TrainConfig(_Strict):
    # >= 1: an "epochs: 0" run would be recorded as finished with the untrained model's mAP.
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)            # per process (rank)
    global_batch_size: Optional[int] = Field(None, ge=1)  # checked against batch_size × world size
    clip_grad_norm: Optional[float] = Field(None, gt=0.0)
    amp: bool = True                # used on CUDA only
    amp_dtype: Literal["float16", "bfloat16"] = "bfloat16"
    deterministic: bool = False
    ckpt_every_steps: int = Field(0, ge=0)       # 0: only at the end of each epoch
    keep_last: int = Field(2, ge=1)
    max_bad_steps: int = Field(5, ge=1)          # consecutive non-finite losses before aborting
    log_every: int = Field(50, ge=1)
    # torch intra-op threads (None = torch's default). On a shared CPU box 1 is often
    # fastest: OpenMP threads spin-wait for a descheduled sibling.
    num_threads: Optional[int] = Field(None, ge=1)
    ema: Optional[float] = Field(None, ge=0, lt=1)  # weight EMA decay (e.g. 0.9997); None = off
    channels_last: bool = False     # model and images in channels-last memory format
    compile: bool = False           # torch.compile the model for training and evaluation
    keep_final_weights: bool = False  # a finished run keeps final.pt (else checkpoints are deleted)
    tensorboard: bool = False       # TensorBoard scalars (loss, lr, metrics) under OUT/SUITE/tb/


class EvalConfig(_Strict):
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    top_k: int = Field(3, ge=1)
    ap: Literal["noninterpolated", "voc_interpolated"] = "noninterpolated"
    topk_mode: Literal["threshold", "pure"] = "threshold"
    # VOC "difficult" labels (target -1) at test time: ignore = out of the ranking (ML-GCN);
    # negative = counted as absent (SSGRL's and Query2Label's evaluation).
    difficult: Literal["ignore", "negative"] = "ignore"
    batch_size: Optional[int] = Field(None, ge=1)


class RunConfig(_Strict):
    seed: int = Field(0, ge=0, le=2 ** 32 - 1)  # numpy's seeding range
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: Any
    model: Any
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    # A detector the runner trains on data.train_split's boxes; its instances feed the
    # model (gmbench/instances/source.py). None: instances, if any, come from elsewhere.
    detector: Optional[DetectorTrainConfig] = None
    # The synthetic pretraining a trunk starts from (model.pretrained / detector.backbone_weights
    # = synthetic; gmbench/pretrain/). Filled with its defaults where used, None elsewhere.
    pretrain: Optional[SyntheticPretrainConfig] = None


def _validate_block(cls, block: Any, prefix: str):
    if not isinstance(block, dict):
        raise ConfigError(f"config key {prefix!r} must be a mapping, got {block!r}")
    try:
        return cls.model_validate(block)
    except ValidationError as e:
        raise ConfigError(_explain(e, cls, prefix)) from None


def validate(raw: Dict[str, Any]) -> RunConfig:
    """Check every key and type of a merged config; returns the typed config."""
    raw = dict(raw)
    valid_top = list(RunConfig.model_fields)
    for k in raw:
        if k not in valid_top:
            close = difflib.get_close_matches(str(k), valid_top, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"unknown config key {k!r}.{hint} Valid keys: {', '.join(valid_top)}")
    blocks = {}
    for key, registry in (("data", DATASETS), ("model", METHODS)):
        block = raw.get(key)
        if not isinstance(block, dict) or "name" not in block:
            raise ConfigError(f"config key '{key}.name' is required "
                              f"(one of: {', '.join(registry.names())})")
        try:
            entry = registry.get(block["name"])
        except UnknownNameError as e:
            raise ConfigError(f"config key '{key}.name': {e}") from None
        blocks[key] = _validate_block(entry.config, block, key)
    rest = {k: v for k, v in raw.items() if k not in ("data", "model")}
    try:
        cfg = RunConfig.model_validate({**rest, "data": {}, "model": {}})
    except ValidationError as e:
        raise ConfigError(_explain(e, RunConfig, "")) from None
    cfg.data, cfg.model = blocks["data"], blocks["model"]
    if cfg.detector is not None and cfg.detector.seed == "run":  # one detector per run seed
        cfg.detector = cfg.detector.model_copy(update={"seed": cfg.seed})
    if cfg.detector is not None:
        from .instances import source
        try:
            source.check(cfg)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    from . import pretrain
    try:
        cfg.pretrain = pretrain.check(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return cfg


def compose(method: str, dataset: str, *overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Merge the layers for one (method config, dataset config) pair; not yet validated."""
    merged = load_yaml(config_root() / "defaults.yaml")
    for layer in (load_yaml(named_yaml("datasets", dataset)), load_yaml(named_yaml("methods", method)),
                  *overrides):
        merged = deep_merge(merged, layer or {})
    return merged


def to_dict(cfg: RunConfig) -> Dict[str, Any]:
    """Plain, JSON-ready view of a validated config (for run records)."""
    out = cfg.model_dump(mode="json")
    out["data"] = cfg.data.model_dump(mode="json")
    out["model"] = cfg.model.model_dump(mode="json")
    if out.get("pretrain") is None:  # configs without it keep the run ids they had before it
        out.pop("pretrain", None)
    return out


