"""GM-MLIC as an ``MLICModel``: instance features → assignment graph → ILMS → max pool."""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from gmbench.graph import build_dgl_graph, dgl_runs_on, keys as K, knn_neighbours, prepare_instances
from gmbench.graph.dgl_util import WORKING_STACKS
from gmbench.models.base import MLICModel, at_least_f32, no_autocast

from .config import GMMLICConfig, unused_settings
from .dense import dense_scores
from .layers import GMMLICHead
from .loss import weighted_bce_from_logits


def select_backend(requested: str, device: torch.device) -> Tuple[str, str]:
    """(backend that runs on ``device``, why DGL cannot or "") for model.backend=``requested``.
    ``auto`` picks DGL where it imports and holds a graph on the device, else dense."""
    if requested == "dense":
        return "dense", ""
    ok, why = dgl_runs_on(device)
    if requested == "dgl" and not ok:
        raise ImportError(f"model.backend=dgl cannot run on {device} ({why}). "
                          f"Working versions: {WORKING_STACKS}.")
    return ("dgl", "") if ok else ("dense", why)


class GMMLIC(MLICModel):
    """out = model(batch): {"logits": [B, C] max-pooled matching logit, "probs": [B, C],
    "scores": S [B, M', C] in [0, 1] (0 at padded slots), M' <= top_m}."""
    needs_boxes = True
    default_loss = "weighted_bce"

    def __init__(self, cfg: GMMLICConfig, word_embeddings: np.ndarray, label_ratios: np.ndarray):
        super().__init__()
        self.cfg = cfg
        # cache / views: features come from the instance cache the runner opens; no image is read.
        self.needs_instance_features = cfg.features in ("cache", "views")
        self.needs_images = not self.needs_instance_features
        self.needs_boxes = cfg.features != "online"   # online: the detector makes the boxes
        object.__setattr__(self, "_extractor", None)
        word = torch.as_tensor(np.asarray(word_embeddings), dtype=torch.float32)
        ratios = torch.as_tensor(np.asarray(label_ratios), dtype=torch.float32)
        if word.dim() != 2 or ratios.shape != (word.shape[0],):
            raise ValueError(f"gm_mlic needs word_embeddings [C, D] and label_ratios [C]; got "
                             f"{tuple(word.shape)} and {tuple(ratios.shape)}")
        # Standardise each label's attribute vector (zero mean, unit variance over its D dims):
        # unit-norm (random) or small-norm (GloVe) vectors otherwise reach the encoder far below
        # its bias scale, and every label starts as nearly the same state (docs/gm_mlic.md).
        self.register_buffer("word", F.layer_norm(word, (word.shape[1],)), persistent=False)
        self.register_buffer("ratios", ratios, persistent=False)
        self.record: Dict[str, object] = {"features": cfg.features, "backend_requested": cfg.backend,
                                          "loss_reduction": cfg.loss_reduction,
                                          "unused_settings": unused_settings(cfg)}
        if cfg.features == "e2e":
            from gmbench.models.backbone import build_backbone
            self.backbone, feat_dim, rec = build_backbone(cfg)
            self.record.update(rec)
        else:
            self.backbone, feat_dim = None, cfg.feat_dim
        self.feat_dim = self.instance_feature_dim = feat_dim
        self.head = GMMLICHead(feat_dim, word.shape[1], cfg.enc_dim, cfg.dims,
                               cfg.use_instance_graph, cfg.use_label_graph, cfg.use_matching_edges,
                               cfg.mlp_layers, cfg.mlp_norm == "layer", cfg.residual)
        self.record["graph"] = self.head.flags()
        self.backend = cfg.backend
        if cfg.backend == "dgl":  # fail at build time, not mid-training
            ok, why = dgl_runs_on(torch.device("cpu"))
            if not ok:
                raise ImportError(f"model.backend=dgl but DGL is unusable ({why}). "
                                  f"Working versions: {WORKING_STACKS}.")

    # -- features ---------------------------------------------------------------
    def attach_instance_extractor(self, extractor) -> None:
        """Online mode: ``extractor(images [B, 3, H, W], geometry [B, 6] or None) ->
        (boxes [B, M, 4] normalised, mask bool [B, M], feats [B, M, D])``, a frozen detector
        built by the runner
        (``gmbench.instances.online``). Kept out of the module tree: not trained, not in
        the state_dict, not moved by ``.to()`` (it follows the images' device)."""
        if self.cfg.features != "online":
            raise ValueError("attach_instance_extractor is for model.features=online")
        dim = int(getattr(extractor, "feat_dim", self.feat_dim))
        if dim != self.feat_dim:
            raise ValueError(f"the online detector gives {dim}-d features but model.feat_dim is "
                             f"{self.feat_dim}; set model.feat_dim={dim}")
        object.__setattr__(self, "_extractor", extractor)
        self.record["instance_extractor"] = getattr(extractor, "settings", repr(extractor))

    def roi_features(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """image [B, 3, H, W], boxes [B, M, 4] normalised → [B, M, C_trunk].

        roi_layer "layer4": RoIAlign on the stride-32 trunk output, then the mean.
        roi_layer "layer3": RoIAlign on the stride-16 map, then layer4 on every RoI, then the
        mean (the Faster R-CNN ResNet-C4 box head; finer boxes on small images, more compute).
        """
        c4 = self.cfg.roi_layer == "layer3"
        fmap = self.backbone[:-1](image) if c4 else self.backbone(image)
        B, M = boxes.shape[:2]
        H, W = image.shape[-2:]
        scale = boxes.new_tensor([W, H, W, H])
        bidx = torch.arange(B, device=boxes.device, dtype=boxes.dtype).repeat_interleave(M)
        rois = torch.cat([bidx[:, None], (boxes * scale).reshape(-1, 4)], 1).to(fmap.dtype)
        r = roi_align(fmap, rois, output_size=self.cfg.roi_size,
                      spatial_scale=fmap.shape[-1] / W, sampling_ratio=2, aligned=True)
        if c4:
            r = self.backbone[-1](r)
        return r.mean((2, 3)).view(B, M, -1)

    def _inputs(self, batch: Dict[str, torch.Tensor]):
        if self.cfg.features == "online":
            if self._extractor is None:
                raise RuntimeError("gm_mlic with model.features=online has no detector attached; "
                                   "the runner attaches it (gmbench.instances.online)")
            with torch.no_grad():
                boxes, box_mask, feats = self._extractor(batch["image"], batch.get("geometry"))
            boxes, mask, feats = prepare_instances(boxes, box_mask, self.cfg.top_m, feats)
            feats = F.layer_norm(feats.to(batch["image"].dtype), (feats.shape[-1],))
            return feats, boxes.to(feats.dtype), mask
        for key in ("boxes", "box_mask"):
            if key not in batch:
                raise KeyError(f"gm_mlic needs batch[{key!r}] (instance boxes); the data "
                               f"loader must provide boxes for methods with needs_boxes=True")
        feats = None
        if self.needs_instance_features:
            if "inst_feat" not in batch:
                raise KeyError("gm_mlic with model.features=cache needs batch['inst_feat'] "
                               "(the instance cache); use model.features=e2e without a cache")
            feats = batch["inst_feat"]
            if feats.shape[-1] != self.feat_dim:
                raise ValueError(f"batch['inst_feat'] is {feats.shape[-1]}-d but model.feat_dim is "
                                 f"{self.feat_dim}; set model.feat_dim={feats.shape[-1]}")
        boxes, mask, feats = prepare_instances(batch["boxes"], batch["box_mask"], self.cfg.top_m,
                                               feats)
        if feats is None:
            feats = self.roi_features(batch["image"], boxes)
        # Standardise each instance feature like the label attributes: ReLU features share a
        # large common component (mean cosine ~0.6 between RoIs) that the encoder would carry.
        feats = F.layer_norm(feats, (feats.shape[-1],))
        return feats, boxes.to(feats.dtype), mask

    # -- backend ------------------------------------------------------------------
    def resolve_backend(self, device: torch.device) -> str:
        backend, why = select_backend(self.backend, device)
        if why:
            self.record["dgl_unusable"] = why
        return backend

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        feats, boxes, mask = self._inputs(batch)
        nbr = nbr_mask = None
        if self.cfg.use_instance_graph:
            nbr, nbr_mask = knn_neighbours(boxes, mask, self.cfg.knn_k)
        word = self.word.to(feats.dtype)
        backend = self.resolve_backend(feats.device)
        self.record["backend"] = backend
        B, M = mask.shape
        C = word.shape[0]
        if backend == "dgl":
            from .dgl_backend import dgl_scores
            g = build_dgl_graph(mask, nbr, nbr_mask, C, self.cfg.use_label_graph,
                                self.cfg.use_matching_edges)
            edge_logit, pooled = dgl_scores(self.head, g, feats[mask], boxes[mask], word)
            logits = pooled.view(B, C)
            pos = g.edges[K.MATCH].data[K.F_POS]
            dense = edge_logit.new_full((B * M * C,), float("-inf")).index_copy(0, pos, edge_logit)
            slot_logits = dense.view(B, M, C)
        else:
            slot_logits = dense_scores(self.head, feats, boxes, mask, nbr, nbr_mask, word)
            slot_logits = slot_logits.masked_fill(~mask[:, :, None], float("-inf"))
            logits = slot_logits.amax(1)   # padded slots are -inf and never win
        with no_autocast(logits):
            return {"logits": logits, "probs": torch.sigmoid(at_least_f32(logits)),
                    "scores": torch.sigmoid(at_least_f32(slot_logits))}

    def loss(self, out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return weighted_bce_from_logits(out["logits"], batch["target"], self.ratios, self.cfg.beta,
                                        self.cfg.loss_reduction)

    def describe(self) -> Dict[str, object]:
        d = dict(self.record)
        d.setdefault("backend", f"unresolved ({self.backend}; resolved at the first forward)")
        return d
