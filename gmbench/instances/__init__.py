"""Instances per image (GM-MLIC's bag of instances): extraction and the on-disk cache.

* ``open_cache(DIR)`` – memory-mapped reader, ``cache[i]`` → dict(feat, boxes, ...).
* ``perturb_boxes`` – jitter annotation boxes and add false ones (pure numpy).
* ``run_extraction`` with a ``DetectorSource`` (Faster R-CNN) or ``BoxesSource``
  (annotation boxes + RoIAlign); the CLI is ``python -m gmbench extract``.
The detector and the driver are imported on first use.
"""
from __future__ import annotations

from pathlib import Path

from .boxes import BoxesConfig, BoxesSource, perturb_boxes
from .cache import CacheError, InstanceCache, open_cache

DEFAULT_TOP_M = {"voc2007": 10, "coco2014": 35, "nuswide": 35}  # the paper's m


def default_cache_dir(data_cache_dir, split: str, source: str, top_m: int) -> Path:
    """Where ``gmbench extract`` writes by default: DATA_CACHE/instances/SPLIT-SOURCE-mM,
    with DATA_CACHE = ``gmbench.data.base.data_cache_dir`` (as the runner uses)."""
    return Path(data_cache_dir).expanduser() / "instances" / f"{split}-{source}-m{top_m}"


def __getattr__(name):
    if name in ("DetectorConfig", "DetectorSource", "build_detector"):
        from . import extract
        return getattr(extract, name)
    if name == "run_extraction":
        from .pipeline import run_extraction
        return run_extraction
    raise AttributeError(f"module 'gmbench.instances' has no attribute {name!r}")


__all__ = ["CacheError", "InstanceCache", "open_cache", "perturb_boxes", "DEFAULT_TOP_M",
           "default_cache_dir", "DetectorConfig", "DetectorSource", "BoxesConfig", "BoxesSource",
           "run_extraction"]
