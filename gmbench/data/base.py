"""Data-layer contracts shared by every dataset and method.

* ``LabelSet``: what ``read_labels`` returns (annotations only, no pixels).
* ``DataConfig``: the validated ``data:`` config block; datasets subclass it.
* ``DatasetSpec``: the per-dataset plug-in (layout, splits, reader).
* ``DataInfo``: training-split side information handed to ``build()`` of a method.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import AnnotationError, ConfigError  # noqa: F401  (AnnotationError: re-exported)
from ..registry import AugmentationName
from ..utils.io import cache_home


@dataclass
class LabelSet:
    """Annotations of one split.

    image_ids:   N str ids (dataset-specific form, see each reader).
    class_names: C str.
    targets:     int8 [N, C]; 1 present, 0 absent, -1 ignored (e.g. VOC difficult-only).
    image_paths: N absolute paths of the image files (may not exist on disk).
    boxes:       optional N arrays float32 [k_i, 4], (x1, y1, x2, y2) in pixels.
    box_labels:  optional N arrays int64 [k_i], class index of each box.
    sizes:       optional int [N, 2] (width, height) when the annotation gives it.
    """
    image_ids: List[str]
    class_names: List[str]
    targets: np.ndarray
    image_paths: List[Path] = field(default_factory=list)
    boxes: Optional[List[np.ndarray]] = None
    box_labels: Optional[List[np.ndarray]] = None
    sizes: Optional[np.ndarray] = None

    def __post_init__(self):
        n, c = len(self.image_ids), len(self.class_names)
        if self.targets.shape != (n, c):
            raise ValueError(f"targets has shape {self.targets.shape}, expected ({n}, {c})")
        self.targets = self.targets.astype(np.int8, copy=False)

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, idx) -> "LabelSet":
        idx = np.asarray(idx, dtype=np.int64)
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        return LabelSet(
            image_ids=[self.image_ids[i] for i in idx], class_names=list(self.class_names),
            targets=self.targets[idx], image_paths=pick(self.image_paths) or [],
            boxes=pick(self.boxes), box_labels=pick(self.box_labels),
            sizes=None if self.sizes is None else self.sizes[idx])


MIN_IMAGE_SIZE = 32


class DataConfig(BaseModel):
    """Settings common to every dataset (the ``data:`` block)."""
    model_config = ConfigDict(extra="forbid")

    name: str
    root: Optional[str] = None
    train_split: str = "train"
    test_split: str = "test"
    # >= 32: the ResNet trunks downsample by 32, a smaller image has no feature map left.
    image_size: int = Field(448, ge=MIN_IMAGE_SIZE)
    train_transform: AugmentationName = "mlgcn"
    test_transform: AugmentationName = "mlgcn"
    # How VOC-style "difficult only" (-1) labels enter the training loss.
    difficult: Literal["positive", "negative", "ignore"] = "ignore"
    skip_bad_images: bool = False
    num_workers: int = Field(0, ge=0)
    # Word embeddings for label nodes: a GloVe text file, or None for seeded random.
    glove: Optional[str] = None
    embedding_dim: int = Field(300, ge=1)
    # Where derived files (side information, synthetic images) are cached;
    # None → next to the data root, or ~/.cache/gmbench for synthetic.
    cache_dir: Optional[str] = None


@dataclass
class DataInfo:
    """Training-split side information a method may use (all numpy).

    class_names:      C str
    label_ratios:     float64 [C], r_c = fraction of training images with label c
    class_counts:     int64 [C], training images with label c
    cooccurrence:     int64 [C, C], images with both labels i and j (diagonal = class_counts)
    word_embeddings:  float32 [C, D]
    embedding_source: "glove:<file>" or "random:seed=<s>"
    n_train:          number of training images
    """
    class_names: List[str]
    label_ratios: np.ndarray
    class_counts: np.ndarray
    cooccurrence: np.ndarray
    word_embeddings: np.ndarray
    embedding_source: str
    n_train: int
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class DatasetSpec:
    """A dataset plug-in. Subclasses set the class attributes and ``read_labels``."""
    name: str = ""
    splits: tuple = ("train", "test")
    # Official image counts per split, for `gmbench data check`.
    expected_counts: Dict[str, int] = {}
    # Human-readable on-disk layout, shown when files are missing.
    layout: str = ""
    # Generated on first use (no files to bring): the dry run says so instead of listing files.
    generated: bool = False

    def read_labels(self, root: Path, split: str, cfg: DataConfig) -> LabelSet:
        raise NotImplementedError

    def expected_files(self, root: Path, split: str, cfg: DataConfig) -> List[Path]:
        """Annotation files ``read_labels`` opens (for --dry-run and error messages)."""
        return []

    def check_root(self, cfg: DataConfig) -> None:
        """Raise ConfigError (exit 2) unless ``data.root`` names an existing folder.
        Only looks; callable at plan time, before any file is written."""
        if not cfg.root:
            raise ConfigError(
                f"dataset {self.name!r} needs data.root (set it with --set data.root=PATH). "
                f"Expected layout:\n{self.layout}")
        require_folder(cfg.root, f"dataset {self.name!r} is read from there. Expected layout:\n"
                       f"{self.layout}\nPut the data there or set data.root=PATH, then check "
                       f"it with: python -m gmbench data check {self.name} --root PATH")

    def prepare_root(self, cfg: DataConfig) -> Path:
        """Resolve (and for generated datasets, create) the data root."""
        self.check_root(cfg)
        return Path(cfg.root).expanduser()


def data_cache_dir(cfg: DataConfig, root) -> Optional[Path]:
    """Where everything derived from a dataset is cached (side information, detectors,
    instance caches): ``data.cache_dir``, else ROOT/.gmbench when ROOT is writable, else
    GMBENCH_CACHE/<name>-<hash of ROOT> (read-only data folders are common on clusters);
    None when neither a cache_dir nor a root is known (a dry run without data.root).
    The one place this rule is written."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    if not root:
        return None
    root = Path(root).expanduser()
    if not root.exists() or os.access(root, os.W_OK):
        return root / ".gmbench"
    tag = hashlib.sha256(str(root.resolve()).encode("utf-8")).hexdigest()[:12]
    return cache_home() / f"{cfg.name}-{tag}"


def require_folder(root: str, why: str) -> Path:
    """``data.root`` as a Path; ConfigError unless it is an existing folder (never creates it)."""
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise ConfigError(f"config key 'data.root': {path} {what}; {why}")
    return path


def fix_hint(dataset: str, root, get_again: str) -> str:
    """The sentence an AnnotationError ends with: how to get a good file, how to check."""
    return (f"The file is damaged or not the official one: {get_again}, then check the data "
            f"with: python -m gmbench data check {dataset} --root {root}")
