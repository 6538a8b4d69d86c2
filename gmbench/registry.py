"""Name → builder registries for methods and datasets (timm-style).

A method registers a ``build(cfg, info) -> MLICModel`` factory together with a
pydantic model that validates its ``model:`` config block::

    @register_method("resnet", config=ResNetConfig)
    def build(cfg: ResNetConfig, info: DataInfo) -> MLICModel: ...

Datasets register the same way with a ``data:`` config class and a module
that provides ``read_labels`` and image access (see ``gmbench.data``).

The training-recipe parts register with their own typed settings (a small pydantic
model declared next to the entry), one registry per extension point:

* ``LOSSES``        ``loss.name``        settings become keys of the ``loss:`` block
* ``OPTIMIZERS``    ``optim.name``       settings become keys of the ``optim:`` block
* ``SCHEDULES``     ``optim.scheduler``  settings become keys of the ``optim:`` block
* ``AUGMENTATIONS`` ``data.*_transform`` settings are the preset's own build arguments

The run config's ``loss:``/``optim:`` blocks are the common keys plus the union of the
registered settings (``gmbench.recipes.settings``), so two entries of one block that
declare the same key must declare it identically (type, default, bounds): that is
checked here, at registration.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Dict, List, Optional, Tuple, Type

from pydantic import AfterValidator

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


# config block → {key: (owner "kind name", field signature)}: the keys the block's
# registered entries declared so far (see _claim_keys).
_BLOCK_KEYS: Dict[str, Dict[str, Tuple[str, tuple]]] = {}


def field_signature(field) -> tuple:
    """What must agree when two entries declare one key: type, default and constraints."""
    return (repr(field.annotation), repr(field.default), field.default_factory,
            tuple(repr(m) for m in field.metadata))


def _claim_keys(block: str, owner: str, config: type) -> None:
    keys = _BLOCK_KEYS.setdefault(block, {})
    for key, field in config.model_fields.items():
        sig = field_signature(field)
        if key in keys and keys[key][1] != sig and keys[key][0] != owner:
            raise ValueError(
                f"{owner} declares the {block}.{key} setting differently from {keys[key][0]} "
                f"(type, default, bounds: {sig} vs {keys[key][1]}); the {block}: block holds one "
                f"{key!r}, so declare it identically or give it another name")
    for key, field in config.model_fields.items():
        keys.setdefault(key, (owner, field_signature(field)))


class Registry:
    """``block``: the run-config block whose keys the entries' settings become (None: the
    settings stay the entry's own, as a method's ``model:`` block or a preset's)."""

    def __init__(self, kind: str, block: Optional[str] = None):
        self.kind, self.block = kind, block
        self._entries: Dict[str, Entry] = {}

    def register(self, name: str, config: Optional[type] = None, **meta) -> Callable:
        def deco(fn):
            if name in self._entries and self._entries[name].fn is not fn:
                raise ValueError(f"{self.kind} {name!r} is registered twice "
                                 f"({self._entries[name].fn.__module__} and {fn.__module__})")
            if self.block and config is not None:
                _claim_keys(self.block, f"{self.kind} {name!r}", config)
            self._entries[name] = Entry(name, fn, config, meta)
            return fn
        return deco

    def entries(self) -> List[Entry]:
        _ensure_loaded()
        return [self._entries[n] for n in sorted(self._entries)]

    def settings_keys(self, name: str) -> List[str]:
        """The keys of entry ``name``'s own settings (empty when it has none)."""
        config = self.get(name).config
        return list(config.model_fields) if config is not None else []

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
LOSSES = Registry("loss", block="loss")
OPTIMIZERS = Registry("optimizer", block="optim")
SCHEDULES = Registry("scheduler", block="optim")
AUGMENTATIONS = Registry("augmentation preset")


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


def register_loss(name: str, settings: Optional[Type] = None) -> Callable:
    """Register ``build(loss_cfg, model) -> fn(logits [B, C], target [B, C]) -> scalar``;
    ``settings``' fields become keys of the ``loss:`` block."""
    return LOSSES.register(name, config=settings)


def register_optimizer(name: str, settings: Optional[Type] = None) -> Callable:
    """Register ``build(param_groups, optim_cfg) -> torch.optim.Optimizer``."""
    return OPTIMIZERS.register(name, config=settings)


def register_schedule(name: str, settings: Optional[Type] = None) -> Callable:
    """Register ``build(optimizer, optim_cfg, steps_per_epoch, epochs) -> LRScheduler``."""
    return SCHEDULES.register(name, config=settings)


def register_augmentation(name: str, settings: Optional[Type] = None) -> Callable:
    """Register ``build(image_size, train, settings) -> (image, boxes) -> (image, boxes)``."""
    return AUGMENTATIONS.register(name, config=settings)


def _augmentation_name(name: str) -> str:
    if name not in AUGMENTATIONS:
        valid = AUGMENTATIONS.names()
        raise ValueError(f"unknown augmentation preset {name!r}.{suggest(name, valid)} "
                         f"Valid: {', '.join(valid)} (`gmbench list` describes them)")
    return name


# A ``data.train_transform`` / ``test_transform`` value: a registered preset's name.
AugmentationName = Annotated[str, AfterValidator(_augmentation_name)]


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
    for mod in ("gmbench.data", "gmbench.data.transforms", "gmbench.models", "baselines",
                "gmbench.recipes"):
        importlib.import_module(mod)
