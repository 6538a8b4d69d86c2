"""Data layer: dataset plug-ins, label reading, image datasets, side information.

Importing this package registers the datasets (the registry imports it lazily).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Tuple

from ..registry import DATASETS
from .base import AnnotationError, DataConfig, DataInfo, DatasetSpec, LabelSet

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


def check_roots(cfgs: Iterable[DataConfig]) -> None:
    """ConfigError (exit 2) for the first data config whose root must exist and does not.
    Only looks at the file system; the runner calls it after planning, before any work."""
    for cfg in cfgs:
        get_spec(cfg.name).check_root(cfg)


def load_splits(cfg: DataConfig) -> Tuple[Path, LabelSet, LabelSet]:
    """(root, train LabelSet, test LabelSet) for a validated data config."""
    spec = get_spec(cfg.name)
    spec.check_root(cfg)
    root = spec.prepare_root(cfg)
    missing = [p for s in (cfg.train_split, cfg.test_split)
               for p in spec.expected_files(root, s, cfg) if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(
            f"dataset {cfg.name!r}: missing {', '.join(str(p) for p in missing)}.\n"
            f"Expected layout under {root}:\n{spec.layout}\n"
            f"Check the data with: python -m gmbench data check {cfg.name} --root {root}")
    splits = []
    for split in (cfg.train_split, cfg.test_split):
        labels = spec.read_labels(root, split, cfg)
        if len(labels) == 0:  # training or testing on nothing would still "finish"
            raise AnnotationError(
                f"dataset {cfg.name!r}, split {split!r} under {root} has no images "
                f"(files: {', '.join(str(p) for p in spec.expected_files(root, split, cfg))}); "
                f"check it with: python -m gmbench data check {cfg.name} --root {root}")
        splits.append(labels)
    return root, splits[0], splits[1]


__all__ = ["AnnotationError", "check_roots", "DataConfig", "DataInfo", "DatasetSpec", "LabelSet", "get_spec", "data_config",
           "read_labels", "load_splits"]
