"""Config files and their errors, without the config schema: YAML loading, the named config
folders (``configs/{suites,methods,datasets}``), merging of layers, ``--set`` parsing, and
``_explain`` (a pydantic error as dotted key paths, bounds and nearest valid keys).

Low in the layers (beside ``errors``), so the tables' published-reference reader and other
light readers use it without importing the schema, whose loss and optimizer blocks are built
from the registries (and so import torch).
"""
from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Dict, List, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError


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
