"""``model.features: online``: the frozen Faster R-CNN of the ``detector`` source, run on
every batch the model sees, so GM-MLIC's instances come from the *augmented* image (§4.2:
448 × 448 random crops with flips), not from a cache of the original image.

The runner builds an ``OnlineDetector`` and attaches it to the model; the model never
imports this layer. The detector is not a submodule of the model: it is not trained, not in
checkpoints, and follows the images to their device on first use.
"""
from __future__ import annotations

import threading
from typing import Dict, List, Optional, Tuple

import torch

from ..data.transforms import MEAN, STD
from ..detector.model import arch_name
from .extract import DetectorConfig, build_detector, detect_with_features


def view_size(geometry: torch.Tensor, H: int, W: int, min_size: int, max_size: int) -> List[Tuple[int, int]]:
    """geometry [B, 6] (gmbench.data.geometry: a_x, b_x, a_y, b_y, orig_w, orig_h) of views
    H × W → per view (h, w): the region of the original image the view shows, at its own
    aspect ratio, resized by torchvision's detector rule (shorter side ``min_size``, longer
    side at most ``max_size``)."""
    out = []
    for g in geometry.tolist():
        rw, rh = W / abs(g[0]), H / abs(g[2])  # original pixels spanned by the view
        s = min(min_size / min(rw, rh), max_size / max(rw, rh))
        out.append((max(1, round(rh * s)), max(1, round(rw * s))))
    return out


class OnlineDetector:
    """images [B, 3, H, W] (normalised with the dataset's MEAN/STD), optional geometry
    [B, 6] → (boxes float [B, M, 4] normalised xyxy in the image, mask bool [B, M],
    feats [B, M, D]), M = the batch's largest detection count (<= top_m), slots in
    descending score order.

    ``view``: ``squashed`` runs the detector on the square image as given; ``crop`` first
    resizes each image to its view's own aspect ratio in the original image (read from the
    geometry), at the detector's resize, so objects keep their shape. Normalised box
    coordinates are the same in both frames, so the boxes need no flip or crop mapping.
    """

    def __init__(self, cfg: DetectorConfig, top_m: int, view: str = "squashed"):
        if view not in ("squashed", "crop"):
            raise ValueError(f"model.detector_input must be squashed or crop, got {view!r}")
        self.cfg, self.top_m, self.view = cfg, top_m, view
        self.model, self.weights_id, self.class_names, self.meta = build_detector(cfg, top_m)
        self.feat_dim = int(self.model.roi_heads.box_head.fc7.out_features)
        self._lock = threading.Lock()

    @property
    def settings(self) -> Dict[str, object]:
        s = self.cfg.model_dump()
        s.update(weights=self.weights_id, arch=arch_name(self.meta["arch"]),
                 source="detector", mode="online", top_m=self.top_m, input=self.view)
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
    def detections(self, images: torch.Tensor, geometry: Optional[torch.Tensor] = None) -> List[dict]:
        """Per image of ``images`` [B, 3, H, W]: dict(boxes float [k, 4] normalised xyxy in the
        image, feat [k, D], labels int [k], scores [k]), k <= top_m, descending score. The one
        detector path of online mode and of the views cache (``views.py``)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"online detector expects images [B, 3, H, W], got {tuple(images.shape)}")
        if self.view == "crop" and (geometry is None or geometry.shape != (images.shape[0], 6)):
            raise ValueError("model.detector_input=crop needs batch['geometry'] [B, 6] (the runner "
                             "wraps the transforms in gmbench.data.geometry.GeometryTransform)")
        model = self._on(images.device)
        mean = images.new_tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = images.new_tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
        # Undo the dataset's normalisation: the detector normalises [0, 1] images itself.
        raw = (images.float() * std + mean).clamp_(0.0, 1.0)
        H, W = raw.shape[-2:]
        views = list(raw)
        if self.view == "crop":  # un-squash: each view at its own aspect, at the detector's size
            t = model.transform
            views = [torch.nn.functional.interpolate(v[None], size=hw, mode="bilinear",
                                                     align_corners=False, antialias=True)[0]
                     for v, hw in zip(views, view_size(geometry, H, W, t.min_size[-1], t.max_size))]
        # Autocast (if on) covers the detector; its features are upcast below.
        batch, _ = model.transform(views)
        out = []
        for d in detect_with_features(model, batch, self.cfg.unique_proposals):
            rh, rw = d["resized"]  # normalised by the frame the detector saw: same in H × W
            out.append({"boxes": (d["boxes"].float() / raw.new_tensor([rw, rh, rw, rh])).clamp_(0.0, 1.0),
                        "feat": d["feat"].float(), "labels": d["labels"], "scores": d["scores"].float()})
        return out

    def __call__(self, images: torch.Tensor, geometry: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dets = self.detections(images, geometry)
        B = len(dets)
        M = max(1, max(len(d["boxes"]) for d in dets))
        boxes = images.new_zeros(B, M, 4, dtype=torch.float32)
        feats = images.new_zeros(B, M, self.feat_dim, dtype=torch.float32)
        mask = torch.zeros(B, M, dtype=torch.bool, device=images.device)
        for b, d in enumerate(dets):
            k = len(d["boxes"])
            boxes[b, :k], feats[b, :k], mask[b, :k] = d["boxes"], d["feat"], True
        return boxes, mask, feats


def build_online_detector(inst, weights: Optional[str] = None) -> OnlineDetector:
    """The detector that ``inst`` (InstanceSettings with ``features: online``) asks for.
    ``weights``: a file the runner trained from the row's ``detector`` block, used instead of
    ``inst.detector_weights`` and at the resize it was trained at (its header's), not at
    ``detector_min_size``/``detector_max_size``."""
    size = {"min_size": inst.detector_min_size, "max_size": inst.detector_max_size}
    if weights is not None:
        size = {"min_size": None, "max_size": None}
    cfg = DetectorConfig(weights=weights or inst.detector_weights, seed=inst.detector_seed, **size)
    return OnlineDetector(cfg, inst.top_m, inst.detector_input)
