"""Name → builder registries for methods and datasets (timm-style).

A method registers a ``build(cfg, info) -> MLICModel`` factory together with a
pydantic model that validates its ``model:`` config block::

    @register_method("resnet", config=ResNetConfig)
    def build(cfg: ResNetConfig, info: DataInfo) -> MLICModel: ...

Datasets register the same way with a ``data:`` config class and a module
that provides ``read_labels`` and image access (see ``gmbench.data``).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Type
from .errors import UnknownNameError  # noqa: F401  (re-exported: raised here)


def suggest(name: str, choices) -> str:
    """'did you mean' text for ``name`` among ``choices``."""
    close = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


@dataclass
class Entry:
    name: str
    fn: Any
    config: Optional[type]
    meta: Dict[str, Any]


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Entry] = {}

    def register(self, name: str, config: Optional[type] = None, **meta) -> Callable:
        def deco(fn):
            if name in self._entries and self._entries[name].fn is not fn:
                raise ValueError(f"{self.kind} {name!r} is registered twice "
                                 f"({self._entries[name].fn.__module__} and {fn.__module__})")
            self._entries[name] = Entry(name, fn, config, meta)
            return fn
        return deco

    def get(self, name: str) -> Entry:
        _ensure_loaded()
        if name not in self._entries:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{suggest(name, self._entries)} "
                f"Valid {self.kind}s: {', '.join(sorted(self._entries))}.")
        return self._entries[name]

    def names(self) -> List[str]:
        _ensure_loaded()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        _ensure_loaded()
        return name in self._entries


METHODS = Registry("method")
DATASETS = Registry("dataset")


def register_method(name: str, config: Type, **meta) -> Callable:
    """Register a method factory ``build(cfg, info) -> MLICModel``."""
    return METHODS.register(name, config=config, **meta)


def register_dataset(name: str, config: Type, **meta) -> Callable:
    """Register a dataset class (see ``gmbench.data.base.DatasetSpec``)."""
    return DATASETS.register(name, config=config, **meta)


def create_model(name: str, info, **settings):
    """Build registered method ``name`` for ``info`` (a DataInfo); ``settings`` are its
    ``model:`` keys, validated by the method's config class (unknown keys are errors)."""
    entry = METHODS.get(name)
    return entry.fn(entry.config.model_validate({"name": name, **settings}), info)


def list_models() -> List[str]:
    return METHODS.names()


def list_datasets() -> List[str]:
    return DATASETS.names()


_loaded = False


def _ensure_loaded() -> None:
    """Import the modules whose import side effect is registration, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    for mod in ("gmbench.data", "gmbench.models", "baselines"):
        importlib.import_module(mod)
