"""The ``detector`` instance source: torchvision Faster R-CNN (ResNet-FPN), frozen.

Weights: torchvision's COCO_V1 ResNet-50-FPN, seeded random, or a file (a
torchvision state dict, or one written by ``gmbench detector train``, whose
header names its architecture; see ``gmbench.detector.model``).

Per image it keeps the top-m detections by score, each with its box, class,
score and the 1024-d box-head feature (TwoMLPHead output) *of the proposal the
detection was decoded from*: that row is exactly what the box predictor saw
when it scored the detection.  To know that row we run the ROI stages
ourselves and keep, through score filtering and NMS, the proposal index of
every candidate (``postprocess_with_index``); with ``unique_proposals=False``
it returns exactly torchvision's detections (tested against the stock model).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, field_validator
from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import batched_nms, boxes as box_ops

from ..detector.model import (TORCHVISION_R50, arch_name, build_faster_rcnn, class_names_of,
                              load_into, read_detector_file)
from ..models.weights import hub_state_dict
from ..utils.io import sha256_file

_COCO_ENUM = "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"


class DetectorConfig(BaseModel):
    """Settings of the detector source (all of them enter the cache identity)."""
    model_config = ConfigDict(extra="forbid")

    weights: str = "coco"            # coco | none (seeded random) | /path/to/state_dict.pth
    seed: int = 0                    # init seed for weights=none
    # torchvision's resize: shorter side, capped so the longer side stays <= max_size;
    # None = the size the weights were trained at (a gmbench detector file), else 800 / 1333
    min_size: Optional[int] = None
    max_size: Optional[int] = None
    score_thresh: float = 0.0        # 0 → every candidate counts, so m exist when proposals do
    nms_thresh: float = 0.5
    rpn_pre_nms_top_n: int = 1000
    rpn_post_nms_top_n: int = 1000
    # True: one detection per proposal (its best foreground class) before NMS, so
    # the m instances are m distinct regions; False: torchvision's per-class output.
    unique_proposals: bool = True

    @field_validator("min_size", "max_size", "rpn_pre_nms_top_n", "rpn_post_nms_top_n")
    @classmethod
    def _positive(cls, v: Optional[int], info) -> Optional[int]:
        if v is not None and v < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {v}")
        return v


def _weights_state(weights: str):
    """(state dict or None, metadata, identity string) for ``--weights``."""
    if weights == "none":
        return None, {"arch": dict(TORCHVISION_R50)}, "random-init"
    if weights == "coco":
        state = hub_state_dict(FasterRCNN_ResNet50_FPN_Weights.COCO_V1)
        return state, {"arch": dict(TORCHVISION_R50)}, f"torchvision:{_COCO_ENUM}"
    path = Path(weights).expanduser().resolve()
    state, meta = read_detector_file(path)
    # the full digest: the cache identity must change with any change of the weights
    return state, meta, f"file:{path.name}#sha256:{sha256_file(path)}"


def build_detector(cfg: DetectorConfig, top_m: int):
    """Frozen Faster R-CNN in eval mode.

    Returns (model, weights identity, class names or None, metadata with 'arch' and, for
    a gmbench detector file, 'trained_on').
    """
    state, meta, ident = _weights_state(cfg.weights)
    arch = meta["arch"]
    num_classes = int(meta.get("num_classes", 91))
    if state is None:
        torch.manual_seed(cfg.seed)  # every rank builds the same random detector
        ident = f"random-init:seed={cfg.seed}"
    # FrozenBatchNorm2d always (as torchvision does for trained weights), so a
    # checkpoint's BN buffers load strictly and random init behaves the same.
    model = build_faster_rcnn(arch, num_classes, min_size=cfg.min_size or arch["min_size"],
                              max_size=cfg.max_size or arch["max_size"],
                              rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n,
                              rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n,
                              box_score_thresh=cfg.score_thresh, box_nms_thresh=cfg.nms_thresh,
                              box_detections_per_img=top_m)
    if state is not None:
        load_into(model, state, cfg.weights, arch)
    model.eval().requires_grad_(False)
    names = class_names_of(meta)
    if names is None and num_classes == 91:
        names = list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    elif names is not None:
        names = ["__background__"] + names  # detector label k = dataset class k - 1
    return model, ident, names, meta


def postprocess_with_index(roi_heads, class_logits: torch.Tensor, box_regression: torch.Tensor,
                           proposals: List[torch.Tensor], image_shapes, unique: bool) -> List[dict]:
    """torchvision's detection post-processing, keeping each detection's proposal row.

    class_logits [P, K], box_regression [P, 4K] for the P = sum P_i proposals of
    the batch.  Returns per image dict(boxes [d,4] in resized-image pixels,
    scores [d], labels [d], rows [d]) with rows indexing the P box-head
    features, sorted by descending score, d <= roi_heads.detections_per_img.
    """
    n_cls = class_logits.shape[-1]
    counts = [len(p) for p in proposals]
    pred_boxes = roi_heads.box_coder.decode(box_regression, proposals)  # [P, K, 4]
    pred_scores = F.softmax(class_logits, -1)
    out, first = [], 0
    for boxes, scores, shape, n in zip(pred_boxes.split(counts), pred_scores.split(counts),
                                       image_shapes, counts):
        boxes = box_ops.clip_boxes_to_image(boxes, shape)
        rows = torch.arange(first, first + n, device=boxes.device)
        first += n
        if unique:  # the best foreground class of each proposal
            scores, labels = scores[:, 1:].max(dim=1)
            labels = labels + 1
            boxes = boxes[torch.arange(n, device=boxes.device), labels]
        else:  # every (proposal, foreground class) pair is a candidate
            labels = torch.arange(1, n_cls, device=boxes.device).repeat(n)
            rows = rows.repeat_interleave(n_cls - 1)
            boxes, scores = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1)
        keep = torch.where(scores > roi_heads.score_thresh)[0]
        keep = keep[box_ops.remove_small_boxes(boxes[keep], min_size=1e-2)]
        keep = keep[batched_nms(boxes[keep], scores[keep], labels[keep], roi_heads.nms_thresh)]
        keep = keep[:roi_heads.detections_per_img]
        out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep],
                    "rows": rows[keep]})
    return out


def detect_with_features(model, batch, unique: bool) -> List[dict]:
    """Run the frozen detector on ``batch``, the ImageList of ``model.transform`` (resized,
    normalised float images).

    Returns per image the ``postprocess_with_index`` dict plus ``feat`` [d, D] (the box-head
    row of each detection) and ``resized`` (the detector's input size, boxes are in it).
    """
    feats = model.backbone(batch.tensors)
    proposals, _ = model.rpn(batch, feats)
    rh = model.roi_heads
    x = rh.box_head(rh.box_roi_pool(feats, proposals, batch.image_sizes))  # [P, D]
    logits, reg = rh.box_predictor(x)
    dets = postprocess_with_index(rh, logits, reg, proposals, batch.image_sizes, unique)
    for d, size in zip(dets, batch.image_sizes):
        d["feat"], d["resized"] = x[d["rows"]], size
    return dets


class DetectorSource:
    """Callable: list of uint8 [3, H, W] images → per-image instance dicts (see cache.pack_shard).

    ``times`` accumulates seconds spent in the resize/normalise transform and in
    the detector proper (synchronised on CUDA, so the split is honest).
    """
    kind = "detector"

    def __init__(self, cfg: DetectorConfig, top_m: int, device: torch.device):
        if top_m < 1:
            raise ValueError(f"--top-m must be >= 1, got {top_m}")
        self.cfg, self.top_m, self.device = cfg, top_m, torch.device(device)
        self.model, self.weights_id, self.class_names, self.meta = build_detector(cfg, top_m)
        self.arch = self.meta["arch"]
        self.model.to(self.device)
        self.feat_dim = int(self.model.roi_heads.box_head.fc7.out_features)
        self.times: Dict[str, float] = {"transform": 0.0, "detector": 0.0}

    @property
    def settings(self) -> dict:
        s = self.cfg.model_dump()
        s.update(weights=self.weights_id, arch=arch_name(self.arch), source=self.kind,
                 min_size=self.model.transform.min_size[0], max_size=self.model.transform.max_size)
        t = self.meta.get("trained_on")
        if t:  # provenance for the run records' protocol block (gmbench/instances/provenance.py)
            s["trained_on"] = {k: t[k] for k in ("dataset", "split", "n_images") if k in t}
        return s

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @torch.inference_mode()
    def detect(self, images: Sequence[torch.Tensor]) -> List[dict]:
        """Resized-space detections with their box-head features (``feat`` [d, 1024])."""
        m = self.model
        t0 = self._sync()
        imgs = [im.to(self.device, non_blocking=True).float().div_(255) for im in images]
        batch, _ = m.transform(imgs)
        t1 = self._sync()
        dets = detect_with_features(m, batch, self.cfg.unique_proposals)
        for d, orig in zip(dets, imgs):
            d["orig"] = tuple(orig.shape[-2:])
        self.times["transform"] += t1 - t0
        self.times["detector"] += self._sync() - t1
        return dets

    def __call__(self, images: Sequence[torch.Tensor], indices: Optional[Sequence[int]] = None) -> List[dict]:
        out = []
        for d in self.detect(images):
            h, w = d["orig"]
            b = resize_boxes(d["boxes"], d["resized"], d["orig"])
            b[:, 0::2] = b[:, 0::2].clamp(0, w)  # float ratios may overshoot by an ulp
            b[:, 1::2] = b[:, 1::2].clamp(0, h)
            out.append({"boxes_px": b.cpu().numpy(), "feat": d["feat"].float().cpu().numpy(),
                        "labels": d["labels"].cpu().numpy(), "scores": d["scores"].float().cpu().numpy(),
                        "size": (w, h)})
        return out
