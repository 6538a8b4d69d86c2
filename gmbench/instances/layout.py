"""The instance cache's on-disk names and identities (layout: ``cache.py``'s docstring),
shared by the writer and reader (``cache.py``), the checks (``verify.py``) and the
extraction driver (``pipeline.py``), which import this module and not each other."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import List, Sequence

from ..utils.io import config_digest

FORMAT = "gmbench-instances/1"
ARRAYS = ("feat", "boxes_px", "boxes", "labels", "scores", "offsets", "sizes")
_PER_INSTANCE = ("feat", "boxes_px", "boxes", "labels", "scores")
# Arrays a shard may hold besides ARRAYS: "geometry" float32 [n, 6] (a views cache: each
# entry's map from the original image to its augmented view, gmbench/data/geometry.py).
OPTIONAL = ("geometry",)


def arrays_of(record: dict) -> tuple:
    """The array names of a shard, from its commit record or manifest entry (``files``)."""
    files = record.get("files") or {}
    return ARRAYS + tuple(a for a in OPTIONAL if a in files)


def ids_digest(image_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(map(str, image_ids)).encode("utf-8")).hexdigest()


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()


def shard_ranges(n_images: int, shard_size: int) -> List[tuple]:
    """[(start, stop)] image index ranges of the shards, in order."""
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    return [(a, min(a + shard_size, n_images)) for a in range(0, n_images, shard_size)]


def shard_name(s: int) -> str:
    return f"shard-{s:05d}"


def array_path(shard_dir: Path, s: int, name: str) -> Path:
    return shard_dir / f"{shard_name(s)}.{name}.npy"


def detector_key(cfg) -> str:
    """Hash naming a (data config, detector config) pair: one trained detector per key, in
    DATA_CACHE/detectors/KEY (the runner's; ``source.py`` and ``views.py`` name it)."""
    from .. import pretrain  # below instances; imported here to keep this module light
    key = {"detector": cfg.detector.model_dump(mode="json"), "data": cfg.data.model_dump(mode="json")}
    if pretrain.detector_uses(cfg):  # its trunk's starting weights are part of what it is
        key["pretrain"] = pretrain.digest(cfg.pretrain)
    return config_digest(key)
