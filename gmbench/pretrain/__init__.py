"""Trunk weights trained by gmbench itself: the synthetic pretraining (``model.pretrained:
synthetic``), the demo's stand-in for ImageNet weights (gmbench/pretrain/synthetic.py)."""
from .config import SYNTHETIC, SyntheticPretrainConfig
from .synthetic import (check, describe, detector_uses, digest, load, prepare, resolve_detector,
                        resolve_model, trunk_uses, weights_path)

__all__ = ["SYNTHETIC", "SyntheticPretrainConfig", "check", "describe", "detector_uses", "digest",
           "load", "prepare", "resolve_detector", "resolve_model", "trunk_uses", "weights_path"]
