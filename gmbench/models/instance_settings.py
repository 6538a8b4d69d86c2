"""What a method reads as instances, as one typed value every reader takes.

A method whose model reads instances (GM-MLIC) exposes ``instance_settings()`` on its
config class; :func:`instance_settings` returns that, or None for the methods that read
none. The instance source (``gmbench/instances/source.py``), the detector block's checks,
the dry run and the record's ``protocol`` block read these fields, never the raw
``model:`` block, so a second instance-reading method only has to implement the hook.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

Features = Literal["e2e", "cache", "online", "views"]


@dataclass(frozen=True)
class InstanceSettings:
    """features: ``cache`` (a cache extracted once), ``online`` (the frozen detector on every
    augmented batch), ``views`` (the frozen detector on K augmented views of each training
    image, cached once; each epoch reads one) or ``e2e`` (annotation boxes + RoIAlign on a
    trainable trunk).
    source: which ``gmbench extract --source`` made the caches (cache mode).
    top_m: instances kept per image; feat_dim: their width (cache / online).
    cache_train / cache_test: explicit cache folders (None: the default place).
    detector_*: the online / views detector (weights coco | none | FILE, init seed, resize, input view).
    views: K, augmented views per training image (views mode); view_seed: the seed their
    crops and flips are drawn from (gmbench/instances/views.py)."""
    features: Features
    source: Literal["detector", "boxes"]
    top_m: int
    feat_dim: int
    cache_train: Optional[str] = None
    cache_test: Optional[str] = None
    detector_weights: str = "coco"
    detector_seed: int = 0
    detector_min_size: int = 800
    detector_max_size: int = 1333
    detector_input: Literal["squashed", "crop"] = "squashed"
    views: int = 1
    view_seed: int = 0

    @property
    def runs_detector(self) -> bool:
        """The frozen detector of the ``detector_*`` settings runs on transformed views (online
        on every batch, views mode once per cached view)."""
        return self.features in ("online", "views")

    @property
    def needs_geometry(self) -> bool:
        """The online detector needs each view's map to the original image (batch["geometry"])."""
        return self.features == "online" and self.detector_input != "squashed"

    @property
    def reads_detector(self) -> bool:
        """Instances come from a detector (online, or a cache of ``--source detector``)."""
        return self.runs_detector or (self.features == "cache" and self.source == "detector")

    @property
    def reads_annotation_boxes(self) -> bool:
        """Instances are the annotation boxes (e2e, or a cache of ``--source boxes``)."""
        return self.features == "e2e" or (self.features == "cache" and self.source == "boxes")


def instance_settings(model_cfg) -> Optional[InstanceSettings]:
    """The instance settings of a validated ``model:`` block, or None (no instances)."""
    hook = getattr(model_cfg, "instance_settings", None)
    return hook() if callable(hook) else None
