"""GM-MLIC as an ``MLICModel``: instance features → assignment graph → ILMS → max pool."""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from gmbench.graph import build_dgl_graph, dgl_runs_on, knn_neighbours, prepare_instances
from gmbench.graph.dgl_util import WORKING_STACKS
from gmbench.models.base import MLICModel

from .config import GMMLICConfig
from .dense import dense_scores
from .layers import GMMLICHead
from .loss import weighted_bce_from_logits


def _at_least_f32(x: torch.Tensor) -> torch.Tensor:
    """Upcast half/bfloat16 (autocast) to float32; leave float32/float64 alone."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class GMMLIC(MLICModel):
    """out = model(batch): {"logits": [B, C] max-pooled matching logit, "probs": [B, C],
    "scores": S [B, M', C] in [0, 1] (0 at padded slots), M' <= top_m}."""
    needs_boxes = True
    default_loss = "weighted_bce"

    def __init__(self, cfg: GMMLICConfig, word_embeddings: np.ndarray, label_ratios: np.ndarray):
        super().__init__()
        self.cfg = cfg
        self.needs_instance_features = cfg.features == "cache"
        word = torch.as_tensor(np.asarray(word_embeddings), dtype=torch.float32)
        ratios = torch.as_tensor(np.asarray(label_ratios), dtype=torch.float32)
        if word.dim() != 2 or ratios.shape != (word.shape[0],):
            raise ValueError(f"gm_mlic needs word_embeddings [C, D] and label_ratios [C]; got "
                             f"{tuple(word.shape)} and {tuple(ratios.shape)}")
        # Standardise each label's attribute vector (zero mean, unit variance over its D dims):
        # unit-norm (random) or small-norm (GloVe) vectors otherwise reach the encoder far below
        # its bias scale, and every label starts as nearly the same state (docs/reproduction.md).
        self.register_buffer("word", F.layer_norm(word, (word.shape[1],)), persistent=False)
        self.register_buffer("ratios", ratios, persistent=False)
        self.record: Dict[str, object] = {"features": cfg.features, "backend_requested": cfg.backend}
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

    # -- features -----------------------------------------------------------------
    def instance_sources(self, root, data_cfg):
        """(train, test) instance caches for the runner in cache mode; (None, None) in e2e."""
        if self.cfg.features != "cache":
            return None, None
        from pathlib import Path

        from gmbench.instances import default_cache_dir, open_cache
        base = Path(data_cfg.cache_dir) if data_cfg.cache_dir else Path(root) / ".gmbench"
        out = []
        for split, given in ((data_cfg.train_split, self.cfg.cache_train),
                             (data_cfg.test_split, self.cfg.cache_test)):
            path = Path(given) if given else default_cache_dir(base, split, self.cfg.instance_source,
                                                               self.cfg.top_m)
            if not (path / "manifest.json").is_file():
                raise FileNotFoundError(
                    f"gm_mlic (model.features=cache) needs the instance cache {path} for split "
                    f"{split!r}; run `python -m gmbench extract --split {split} --source "
                    f"{self.cfg.instance_source} --top-m {self.cfg.top_m}`, set "
                    f"model.cache_train/model.cache_test, or use model.features=e2e")
            out.append(open_cache(path))
        self.record["instance_caches"] = [str(c.root) for c in out]
        return tuple(out)

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
        for key in ("boxes", "box_mask"):
            if key not in batch:
                raise KeyError(f"gm_mlic needs batch[{key!r}] (instance boxes); the data "
                               f"loader must provide boxes for methods with needs_boxes=True")
        feats = None
        if self.cfg.features == "cache":
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
        if self.backend == "dense":
            return "dense"
        ok, why = dgl_runs_on(device)
        if self.backend == "dgl" and not ok:
            raise ImportError(f"model.backend=dgl cannot run on {device} ({why}). "
                              f"Working versions: {WORKING_STACKS}.")
        if not ok:
            self.record["dgl_unusable"] = why
        return "dgl" if ok else "dense"

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
            pos = g.edges["match"].data["pos"]
            dense = edge_logit.new_full((B * M * C,), float("-inf")).index_copy(0, pos, edge_logit)
            slot_logits = dense.view(B, M, C)
        else:
            slot_logits = dense_scores(self.head, feats, boxes, mask, nbr, nbr_mask, word)
            slot_logits = slot_logits.masked_fill(~mask[:, :, None], float("-inf"))
            logits = slot_logits.amax(1)   # padded slots are -inf and never win
        return {"logits": logits, "probs": torch.sigmoid(_at_least_f32(logits)),
                "scores": torch.sigmoid(_at_least_f32(slot_logits))}

    def loss(self, out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return weighted_bce_from_logits(out["logits"], batch["target"], self.ratios, self.cfg.beta)

    def probs(self, out: Dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(_at_least_f32(out["logits"]))

    def describe(self) -> Dict[str, object]:
        d = dict(self.record)
        d.setdefault("backend", f"unresolved ({self.backend}; resolved at the first forward)")
        return d
