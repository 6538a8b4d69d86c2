"""``model.features: online``: the frozen Faster R-CNN of the ``detector`` source, run on
every batch the model sees, so GM-MLIC's instances come from the *augmented* image (§4.2:
448 × 448 random crops with flips), not from a cache of the original image.

The runner builds an ``OnlineDetector`` and attaches it to the model; the model never
imports this layer. The detector is not a submodule of the model: it is not trained, not in
checkpoints, and follows the images to their device on first use.
"""
from __future__ import annotations

import threading
from typing import Dict, Tuple

import torch
from torchvision.models.detection.transform import resize_boxes

from ..data.transforms import MEAN, STD
from ..detector.model import arch_name
from .extract import DetectorConfig, build_detector, detect_with_features


class OnlineDetector:
    """images [B, 3, H, W] (normalised with the dataset's MEAN/STD) →
    (boxes float [B, M, 4] normalised xyxy in the image, mask bool [B, M], feats [B, M, D]),
    M = the batch's largest detection count (<= top_m), slots in descending score order.
    """

    def __init__(self, cfg: DetectorConfig, top_m: int):
        self.cfg, self.top_m = cfg, top_m
        self.model, self.weights_id, _, self.meta = build_detector(cfg, top_m)
        self.feat_dim = int(self.model.roi_heads.box_head.fc7.out_features)
        self._lock = threading.Lock()

    @property
    def settings(self) -> Dict[str, object]:
        s = self.cfg.model_dump()
        s.update(weights=self.weights_id, arch=arch_name(self.meta["arch"]),
                 source="detector", mode="online", top_m=self.top_m)
        t = self.meta.get("trained_on")
        if t:  # provenance for the run record's protocol block, as the caches carry it
            s["trained_on"] = {k: t[k] for k in ("dataset", "split", "n_images") if k in t}
        return s

    def _on(self, device: torch.device):
        with self._lock:
            if next(self.model.parameters()).device != device:
                self.model.to(device)
        return self.model

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"online detector expects images [B, 3, H, W], got {tuple(images.shape)}")
        model = self._on(images.device)
        mean = images.new_tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = images.new_tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
        # Undo the dataset's normalisation: the detector normalises [0, 1] images itself.
        raw = (images.float() * std + mean).clamp_(0.0, 1.0)
        H, W = raw.shape[-2:]
        # Autocast (if on) covers the detector; its features are upcast below.
        batch, _ = model.transform(list(raw))
        dets = detect_with_features(model, batch, self.cfg.unique_proposals)
        B = len(dets)
        M = max(1, max(len(d["boxes"]) for d in dets))
        boxes = raw.new_zeros(B, M, 4)
        feats = raw.new_zeros(B, M, self.feat_dim)
        mask = torch.zeros(B, M, dtype=torch.bool, device=raw.device)
        scale = raw.new_tensor([W, H, W, H])
        for b, d in enumerate(dets):
            k = len(d["boxes"])
            if k:
                px = resize_boxes(d["boxes"].float(), d["resized"], (H, W))
                boxes[b, :k] = (px / scale).clamp_(0.0, 1.0)
                feats[b, :k] = d["feat"].float()
                mask[b, :k] = True
        return boxes, mask, feats


def build_online_detector(inst) -> OnlineDetector:
    """The detector that ``inst`` (InstanceSettings with ``features: online``) asks for."""
    cfg = DetectorConfig(weights=inst.detector_weights, seed=inst.detector_seed,
                         min_size=inst.detector_min_size, max_size=inst.detector_max_size)
    return OnlineDetector(cfg, inst.top_m)
