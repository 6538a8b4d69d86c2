"""Layered, validated configuration.

Layers, later wins: configs/defaults.yaml → configs/datasets/<dataset>.yaml →
configs/methods/<method>.yaml → suite ``defaults`` → suite row ``set`` → ``--set``.
The ``data:`` block is validated by the registered dataset's config class and the
``model:`` block by the registered method's, so every key is checked (path, type,
nearest valid keys) before any work starts.
"""
from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .detector.config import DetectorTrainConfig
from .registry import DATASETS, METHODS, UnknownNameError
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


def config_root() -> Path:
    from .utils.resources import config_dir  # $GMBENCH_CONFIGS, else the shipped configs/
    return config_dir()


def load_yaml(path: Path) -> Dict[str, Any]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(doc).__name__}")
    return doc


def available(kind: str) -> List[str]:
    """Config names under configs/<kind>/ (methods, datasets, suites)."""
    return sorted(p.stem for p in (config_root() / kind).glob("*.yaml"))


def named_yaml(kind: str, name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    path = config_root() / kind / f"{name}.yaml"
    if not path.exists():
        choices = available(kind)
        close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown {kind[:-1]} {name!r}.{hint} Valid: {', '.join(choices)}.")
    return path


def deep_merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def dotted_to_nested(flat: Dict[str, Any]) -> Dict[str, Any]:
    """{"optim.lr": 0.1} → {"optim": {"lr": 0.1}}; nested values pass through."""
    out: Dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = str(key).split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r} descends into a non-mapping value")
        node[parts[-1]] = value
        # an override of a whole mapping merges into it
    return out


def parse_set(items: List[str]) -> Dict[str, Any]:
    """``["optim.lr=0.1", "model.dims=[256,128]"]`` → nested dict (values parsed as YAML)."""
    flat = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        try:
            flat[key.strip()] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            flat[key.strip()] = raw
    return dotted_to_nested(flat)



_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _inner_model(annotation, part):
    """The pydantic model that ``part`` (a field name, list index or dict key) of a value
    typed ``annotation`` is validated by, or None. Unwraps Optional/Union, List and Dict,
    so ``rows.0.sett`` of a suite resolves to RowSpec's fields."""
    def models(tp):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return [tp]
        args = [a for a in get_args(tp) if a is not type(None)]
        if get_origin(tp) in (list, List, tuple, set):
            return models(args[0]) if args and not isinstance(part, str) else []
        if get_origin(tp) in (dict, Dict):
            return models(args[-1]) if args else []
        return [m for a in args for m in models(a)]  # Union / Optional
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else None
    found = models(annotation)
    return found[0] if found else None


def _valid_range(model_cls, loc) -> str:
    """ " (valid: 0 <= x < 1)" from the Field bounds of the key at ``loc``, or ""."""
    parent = model_cls
    for part in loc[:-1]:
        parent = _inner_model(parent, part) if parent is not None else None
    fields = getattr(parent, "model_fields", None) or {}
    field = fields.get(loc[-1]) if loc and isinstance(loc[-1], str) else None
    if field is None:
        return ""
    lo = hi = ""
    for m in field.metadata:
        for attr, side, op in (("ge", "lo", "<="), ("gt", "lo", "<"), ("le", "hi", "<="),
                               ("lt", "hi", "<")):
            v = getattr(m, attr, None)
            if v is not None and side == "lo":
                lo = f"{v} {op} "
            elif v is not None:
                hi = f" {op} {v}"
    return f" (valid: {lo}{loc[-1]}{hi})" if lo or hi else ""


def _explain(err: ValidationError, model_cls, prefix: str) -> str:
    """One line per error: the dotted key path, what is wrong, the value given; for an
    unknown key the nearest valid keys and every valid key at that level."""
    lines = []
    for e in err.errors():
        loc = [x for x in e["loc"]]
        path = ".".join([prefix] + [str(x) for x in loc]) if prefix else ".".join(map(str, loc))
        if e["type"] == "extra_forbidden":
            parent = model_cls
            for part in loc[:-1]:
                parent = _inner_model(parent, part) if parent is not None else None
            while parent is not None and not (isinstance(parent, type)
                                              and issubclass(parent, BaseModel)):
                parent = _inner_model(parent, 0)  # e.g. Optional[Spec] reached by a field name
            valid = sorted(getattr(parent, "model_fields", {}) or [])
            close = difflib.get_close_matches(str(loc[-1]), valid, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            lines.append(f"unknown config key {path!r}.{hint} Valid keys here: {', '.join(valid)}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            bounds = _valid_range(model_cls, loc) if e["type"] in _RANGE_ERRORS else ""
            lines.append(f"config key {path!r}: {msg}{bounds}; got {e.get('input')!r}")
    return "\n".join(lines)


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
    if cfg.detector is not None:
        from .instances import source
        try:
            source.check(cfg)
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
    return out


