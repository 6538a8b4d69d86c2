"""Data layer: dataset plug-ins, label reading, image datasets, side information.

Importing this package registers the datasets (the registry imports it lazily).
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

from ..registry import DATASETS
from .base import DataConfig, DataInfo, DatasetSpec, LabelSet

from . import coco, nuswide, synthetic, voc  # noqa: F401,E402  (registration)


def get_spec(name: str) -> DatasetSpec:
    return DATASETS.get(name).fn()


def data_config(name: str, **options) -> DataConfig:
    """Validate ``options`` against dataset ``name``'s config class."""
    return DATASETS.get(name).config(name=name, **options)


def read_labels(name: str, root, split: str, **options) -> LabelSet:
    """Annotations of one split (no image decoding). See each dataset module."""
    cfg = data_config(name, root=None if root is None else str(root), **options)
    spec = get_spec(name)
    return spec.read_labels(spec.prepare_root(cfg), split, cfg)


def load_splits(cfg: DataConfig) -> Tuple[Path, LabelSet, LabelSet]:
    """(root, train LabelSet, test LabelSet) for a validated data config."""
    spec = get_spec(cfg.name)
    root = spec.prepare_root(cfg)
    missing = [p for s in (cfg.train_split, cfg.test_split)
               for p in spec.expected_files(root, s, cfg) if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(
            f"dataset {cfg.name!r}: missing {', '.join(str(p) for p in missing)}.\n"
            f"Expected layout under {root}:\n{spec.layout}\n"
            f"Check the data with: python -m gmbench data check {cfg.name} --root {root}")
    return root, spec.read_labels(root, cfg.train_split, cfg), spec.read_labels(root, cfg.test_split, cfg)


__all__ = ["DataConfig", "DataInfo", "DatasetSpec", "LabelSet", "get_spec", "data_config",
           "read_labels", "load_splits"]
