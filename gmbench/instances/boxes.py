"""The ``boxes`` instance source: annotation boxes (optionally perturbed) + RoIAlign features.

It writes the same cache as the detector source and serves the synthetic demo
(no pretrained detector here) and the "oracle instances" ablation.  Features:
RoIAlign (7x7, aligned) over the ResNet ``layer3`` map (stride 16; 1024
channels for ResNet-50/101, like the detector's box head), averaged to one
vector per box.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, field_validator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import roi_align

from ..data.base import LabelSet
from ..models.backbone import build_resnet

_MEAN, _STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _fit(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Order corners, clip into the image, and keep at least 1 px per side."""
    x1 = np.clip(np.minimum(boxes[:, 0], boxes[:, 2]), 0, width - 1)
    x2 = np.clip(np.maximum(boxes[:, 0], boxes[:, 2]), x1 + 1, width)
    y1 = np.clip(np.minimum(boxes[:, 1], boxes[:, 3]), 0, height - 1)
    y2 = np.clip(np.maximum(boxes[:, 1], boxes[:, 3]), y1 + 1, height)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)


def perturb_boxes(boxes_xyxy_px: np.ndarray, width: float, height: float, *, jitter: float,
                  n_false: int, rng: np.random.Generator) -> np.ndarray:
    """Jitter annotation boxes and append random false boxes.

    boxes_xyxy_px: float [k, 4] (x1, y1, x2, y2) in pixels of a width x height image.
    jitter: each edge moves by U(-jitter, jitter) times the box's width (x edges)
        or height (y edges); 0 leaves in-image boxes unchanged.
    n_false: boxes appended after the k real ones, each side U(0.1, 0.5) of the
        image side, placed uniformly inside the image.
    Returns float32 [k + n_false, 4], every box inside [0, width] x [0, height]
    with x2 - x1 >= 1 and y2 - y1 >= 1; a pure function of its inputs and rng state.
    """
    b = np.asarray(boxes_xyxy_px, dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape [k, 4], got {b.shape}")
    if not np.isfinite(b).all():
        raise ValueError("boxes hold NaN or inf")
    if not (width >= 1 and height >= 1):
        raise ValueError(f"image size must be at least 1 x 1 px, got {width} x {height}")
    if not (np.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"jitter must be a finite number >= 0, got {jitter}")
    if int(n_false) != n_false or n_false < 0:
        raise ValueError(f"n_false must be an integer >= 0, got {n_false}")
    side = np.maximum(np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]] * 2, axis=1), 1.0)
    real = b + rng.uniform(-jitter, jitter, size=b.shape) * side
    n = int(n_false)
    wh = rng.uniform(0.1, 0.5, size=(n, 2)) * [width, height]
    xy = rng.uniform(0.0, 1.0, size=(n, 2)) * ([width, height] - wh)
    false = np.concatenate([xy, xy + wh], axis=1)
    return _fit(np.concatenate([real, false]), float(width), float(height))


class BoxesConfig(BaseModel):
    """Settings of the boxes source (all of them enter the cache identity)."""
    model_config = ConfigDict(extra="forbid")

    depth: int = 50
    weights: str = "imagenet"        # imagenet | none (seeded random) | /path/to/resnet.pth
    seed: int = 0                    # perturbation seed (and init seed for weights=none)
    min_size: int = 448
    max_size: int = 1333
    jitter: float = 0.0
    n_false: int = 0
    roi_size: int = 7

    @field_validator("jitter")
    @classmethod
    def _jitter(cls, v: float) -> float:
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"jitter must be >= 0, got {v}")
        return v

    @field_validator("n_false")
    @classmethod
    def _n_false(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"n_false must be >= 0, got {v}")
        return v


def image_boxes(labels: LabelSet, i: int, width: int, height: int, cfg: BoxesConfig,
                top_m: int) -> Dict[str, np.ndarray]:
    """The (perturbed) boxes of image i in its decoded pixel size, real ones first.

    Real boxes are ordered by area (largest first) and keep their class index and
    score 1; false boxes get label -1 and score 0; at most ``top_m`` are kept.
    """
    if labels.boxes is None:
        raise ValueError("the 'boxes' instance source needs box annotations; this dataset "
                         "has none (use --source detector)")
    b = np.asarray(labels.boxes[i], dtype=np.float64).reshape(-1, 4)
    if labels.sizes is not None:  # annotations may refer to another scale than the file
        sw, sh = labels.sizes[i]
        if sw > 0 and sh > 0:
            b = b * [width / sw, height / sh, width / sw, height / sh]
    lab = (np.asarray(labels.box_labels[i], dtype=np.int64) if labels.box_labels is not None
           else np.full(len(b), -1, dtype=np.int64))
    order = np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), kind="stable")
    rng = np.random.default_rng([cfg.seed, i])  # per image: independent of sharding
    boxes = perturb_boxes(b[order], width, height, jitter=cfg.jitter, n_false=cfg.n_false, rng=rng)
    labels_out = np.concatenate([lab[order], np.full(cfg.n_false, -1, dtype=np.int64)])
    scores = np.concatenate([np.ones(len(b)), np.zeros(cfg.n_false)]).astype(np.float32)
    return {"boxes_px": boxes[:top_m], "labels": labels_out[:top_m], "scores": scores[:top_m]}


class BoxesSource:
    """Callable: (uint8 [3, H, W] images, image indices) → per-image instance dicts."""
    kind = "boxes"

    def __init__(self, cfg: BoxesConfig, top_m: int, device: torch.device, labels: LabelSet):
        if top_m < 1:
            raise ValueError(f"--top-m must be >= 1, got {top_m}")
        if labels.boxes is None:
            raise ValueError("the 'boxes' instance source needs box annotations (VOC, COCO, "
                             "synthetic); this dataset has none: use --source detector")
        self.cfg, self.top_m, self.labels = cfg, top_m, labels
        self.device = torch.device(device)
        if cfg.weights == "none":
            torch.manual_seed(cfg.seed)  # every rank builds the same random trunk
        trunk, _, record = build_resnet(cfg.depth, cfg.weights)
        self.weights_id = record["weights"] + (f":seed={cfg.seed}" if cfg.weights == "none" else "")
        self.body = trunk[:-1].eval().requires_grad_(False).to(self.device)  # up to layer3
        last = trunk[-2][-1]  # final block of layer3: Bottleneck (bn3) or BasicBlock (bn2)
        self.feat_dim = int((last.bn3 if hasattr(last, "bn3") else last.bn2).num_features)
        self.transform = GeneralizedRCNNTransform(cfg.min_size, cfg.max_size, _MEAN, _STD).eval()
        self.class_names = list(labels.class_names)
        self.times: Dict[str, float] = {"transform": 0.0, "detector": 0.0}

    @property
    def settings(self) -> dict:
        s = self.cfg.model_dump()
        s.update(weights=self.weights_id, arch=f"resnet{self.cfg.depth}.layer3+roi_align",
                 source=self.kind)
        return s

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @torch.inference_mode()
    def __call__(self, images: Sequence[torch.Tensor], indices: Optional[Sequence[int]] = None) -> List[dict]:
        if indices is None or len(indices) != len(images):
            raise ValueError("the boxes source needs the dataset index of every image")
        t0 = self._sync()
        imgs = [im.to(self.device, non_blocking=True).float().div_(255) for im in images]
        batch, _ = self.transform(imgs)
        t1 = self._sync()
        fmap = self.body(batch.tensors)  # [B, C, H/16, W/16]
        per = []
        rois = []
        for im, i, (rh, rw) in zip(imgs, indices, batch.image_sizes):
            h, w = im.shape[-2:]
            inst = image_boxes(self.labels, int(i), w, h, self.cfg, self.top_m)
            scale = torch.tensor([rw / w, rh / h, rw / w, rh / h], dtype=torch.float32)
            rois.append((torch.from_numpy(inst["boxes_px"]) * scale).to(self.device))
            per.append(dict(inst, size=(w, h)))
        pooled = roi_align(fmap, rois, output_size=self.cfg.roi_size,
                           spatial_scale=fmap.shape[-1] / batch.tensors.shape[-1],
                           sampling_ratio=2, aligned=True)
        feat = pooled.mean(dim=(2, 3)).float().cpu().numpy()  # [sum k, C]
        self.times["transform"] += t1 - t0
        self.times["detector"] += self._sync() - t1
        a = 0
        for inst in per:
            k = len(inst["boxes_px"])
            inst["feat"], a = feat[a:a + k], a + k
        return per
