"""Assignment-graph construction (ASGC, §3.2): instances, kNN graph, label graph,
matching edges. Keys and layouts are documented in ``gmbench.graph.keys``.

All functions are vectorised over the batch; none loops over images or edges.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import keys as K
from .dgl_util import require_dgl


def prepare_instances(boxes: torch.Tensor, box_mask: torch.Tensor, top_m: int,
                      feats: Optional[torch.Tensor] = None):
    """Keep the first ``top_m`` slots and guarantee >= 1 instance per image.

    boxes [B, M, 4] normalised (x1, y1, x2, y2); box_mask bool [B, M]; feats [B, M, D] or None.
    Returns (boxes [B, M', 4], mask [B, M'], feats [B, M', D] or None), M' <= top_m, trimmed to
    the last valid slot of any image. An image without a valid box gets slot 0 set to the
    whole-image box (0, 0, 1, 1) and marked valid; its feature there is whatever ``feats``
    holds in slot 0 (zeros from the collate's padding) unless the caller recomputes it.
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or box_mask.shape != boxes.shape[:2]:
        raise ValueError(f"boxes must be [B, M, 4] with box_mask [B, M]; got "
                         f"{tuple(boxes.shape)} and {tuple(box_mask.shape)}")
    if boxes.shape[1] == 0:  # no box anywhere in the batch: make one slot
        boxes = boxes.new_zeros(boxes.shape[0], 1, 4)
        box_mask = box_mask.new_zeros(boxes.shape[0], 1)
        feats = None if feats is None else feats.new_zeros(feats.shape[0], 1, feats.shape[-1])
    boxes, mask = boxes[:, :top_m], box_mask[:, :top_m].bool()
    feats = None if feats is None else feats[:, :top_m]
    empty = ~mask.any(1)
    if bool(empty.any()):
        whole = boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
        boxes = boxes.clone()
        boxes[empty, 0] = whole
        mask = mask.clone()
        mask[empty, 0] = True
    slots = torch.arange(mask.shape[1], device=mask.device)
    m_used = int((mask * (slots + 1)).amax())  # last valid slot + 1
    boxes, mask = boxes[:, :m_used], mask[:, :m_used]
    feats = None if feats is None else feats[:, :m_used]
    return boxes, mask, feats


@torch.no_grad()
def knn_neighbours(boxes: torch.Tensor, mask: torch.Tensor, k: int
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Directed kNN over valid instances by box-centre (Euclidean) distance.

    boxes [B, M, 4], mask bool [B, M] → nbr long [B, M, K], nbr_mask bool [B, M, K],
    K = min(k, M-1). nbr[b, i, :] are the nearest valid instances j != i, ascending
    distance; entries past min(k, m_b - 1) and rows of padded i are masked out.
    """
    B, M = mask.shape
    kk = max(0, min(k, M - 1))
    centre = (boxes[..., :2] + boxes[..., 2:]) * 0.5
    d2 = ((centre[:, :, None, :] - centre[:, None, :, :]) ** 2).sum(-1)  # [B, M(i), M(j)]
    eye = torch.eye(M, dtype=torch.bool, device=mask.device)
    bad = eye[None] | ~mask[:, None, :]
    d2 = d2.masked_fill(bad, float("inf"))
    if kk == 0:
        z = torch.zeros(B, M, 0, dtype=torch.long, device=mask.device)
        return z, z.bool()
    dist, nbr = torch.topk(d2, kk, dim=2, largest=False, sorted=True)
    nbr_mask = torch.isfinite(dist) & mask[:, :, None]
    return nbr, nbr_mask


def label_pair_mask(num_classes: int, device=None) -> torch.Tensor:
    """bool [C, C], True off the diagonal: the label graph has every ordered pair of
    distinct labels (no co-occurrence statistics)."""
    return ~torch.eye(num_classes, dtype=torch.bool, device=device)


def build_dgl_graph(mask: torch.Tensor, nbr: Optional[torch.Tensor],
                    nbr_mask: Optional[torch.Tensor], num_classes: int,
                    use_label_graph: bool = True, use_matching_edges: bool = True):
    """A batched DGL heterograph (what ``dgl.batch`` of per-image graphs gives), built
    with tensor ops only.

    mask bool [B, M] valid instance slots; nbr/nbr_mask [B, M, K] from ``knn_neighbours``
    (None = no instance graph); num_classes C. Instance nodes are the valid slots in
    (image, slot) order; label nodes are image-major, C per image.
    MATCH edges always exist (the readout needs every instance-label pair); they carry
    a state and MATCH_REV exists only when ``use_matching_edges``.
    """
    dgl = require_dgl()
    dev = mask.device
    B, M = mask.shape
    C = num_classes
    counts = mask.sum(1)                                        # [B]
    gid = torch.cumsum(mask.reshape(-1).long(), 0).view(B, M) - 1
    data, n_edges = {}, {}
    if nbr is not None:
        b, i, k = nbr_mask.nonzero(as_tuple=True)
        data[K.KNN] = (gid[b, nbr[b, i, k]], gid[b, i])         # neighbour → node
        n_edges[K.KNN] = nbr_mask.sum((1, 2))
    cls = torch.arange(C, device=dev)
    if use_label_graph:
        pm = label_pair_mask(C, dev)
        dst_c, src_c = pm.nonzero(as_tuple=True)                # dst-major, like the dense layout
        off = (torch.arange(B, device=dev) * C)[:, None]
        data[K.CO] = ((off + src_c).reshape(-1), (off + dst_c).reshape(-1))
        n_edges[K.CO] = torch.full((B,), C * (C - 1), dtype=torch.long, device=dev)
    bi, sj = mask.nonzero(as_tuple=True)                        # valid slots, (b, j) order
    m_src = gid[bi, sj].repeat_interleave(C)
    m_dst = (bi * C).repeat_interleave(C) + cls.repeat(bi.numel())
    data[K.MATCH] = (m_src, m_dst)
    n_edges[K.MATCH] = counts * C
    if use_matching_edges:
        data[K.MATCH_REV] = (m_dst, m_src)
        n_edges[K.MATCH_REV] = counts * C
    g = dgl.heterograph(data, num_nodes_dict={K.INST: int(counts.sum()), K.LABEL: B * C},
                        idtype=torch.int64, device=dev)
    g.set_batch_num_nodes({K.INST: counts, K.LABEL: torch.full((B,), C, dtype=torch.long,
                                                               device=dev)})
    g.set_batch_num_edges({g.to_canonical_etype(et): n for et, n in n_edges.items()})
    g.nodes[K.LABEL].data[K.F_CID] = cls.repeat(B)
    g.edges[K.MATCH].data[K.F_POS] = ((bi * M + sj) * C).repeat_interleave(C) + cls.repeat(bi.numel())
    return g
