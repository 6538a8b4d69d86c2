"""What the runner opens for a method's instances: the instance caches of
``model.features: cache`` and the online detector of ``model.features: online``.

Models declare what they need (``needs_instance_features``, ``attach_instance_extractor``);
this module, called by the runner, turns the config into open caches / a built detector,
so that no model imports the instances layer.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from . import default_cache_dir
from .cache import InstanceCache, open_cache


def cache_paths(data_cfg, model_cfg, root: Optional[Path]) -> List[Tuple[str, Path]]:
    """[(split, cache dir)] for train and test of a cache-mode model config; splits whose
    directory cannot be known (no root, no data.cache_dir, no explicit path) are left out."""
    if getattr(model_cfg, "features", None) != "cache":
        return []
    base = (Path(data_cfg.cache_dir) if data_cfg.cache_dir
            else (Path(root) / ".gmbench" if root else None))
    out = []
    for split, given in ((data_cfg.train_split, model_cfg.cache_train),
                         (data_cfg.test_split, model_cfg.cache_test)):
        if given:
            out.append((split, Path(given).expanduser()))
        elif base is not None:
            out.append((split, default_cache_dir(base, split, model_cfg.instance_source,
                                                 model_cfg.top_m).expanduser()))
    return out


def open_instance_caches(data_cfg, model_cfg, root: Path
                         ) -> Tuple[Optional[InstanceCache], Optional[InstanceCache]]:
    """(train, test) caches of a cache-mode config, or (None, None) for other modes."""
    paths = cache_paths(data_cfg, model_cfg, root)
    if not paths:
        return None, None
    out = []
    for split, path in paths:
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(
                f"{model_cfg.name} (model.features=cache) needs the instance cache {path} for "
                f"split {split!r}; run `python -m gmbench extract --split {split} --source "
                f"{model_cfg.instance_source} --top-m {model_cfg.top_m}`, set "
                f"model.cache_train/model.cache_test, or use model.features=online or e2e")
        out.append(open_cache(path))
    return out[0], out[1]


def prepare_model_instances(model, data_cfg, model_cfg, root: Path):
    """Open what ``model`` reads its instances from. Returns (train, test) instance caches
    (None in other modes); in online mode attaches the detector to the model."""
    if getattr(model_cfg, "features", None) == "online" and hasattr(model, "attach_instance_extractor"):
        from .online import build_online_detector
        model.attach_instance_extractor(build_online_detector(model_cfg))
        return None, None
    if not getattr(model, "needs_instance_features", False):
        return None, None
    caches = open_instance_caches(data_cfg, model_cfg, root)
    if hasattr(model, "record"):
        model.record["instance_caches"] = [str(c.root) for c in caches if c is not None]
    return caches


def detector_weights_file(model_cfg) -> Optional[Path]:
    """The weights file an online-mode config reads: a path, or torchvision's COCO file in
    the hub cache for ``coco``; None for other modes and ``none`` (random init)."""
    if getattr(model_cfg, "features", None) != "online":
        return None
    w = model_cfg.detector_weights
    if w == "none":
        return None
    if w == "coco":
        from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights
        from ..models.weights import hub_weights_path
        return hub_weights_path(FasterRCNN_ResNet50_FPN_Weights.COCO_V1)
    return Path(w).expanduser()
