"""Dense backend: the ILMS forward on batched, masked tensors (no DGL).

Layouts (see ``gmbench.graph.keys``): instance nodes [B, M, d]; label nodes [B|1, C, d]
(batch dim 1 while still image-independent, so that work is done once); kNN edges
[B, M, K, d] dst-major; label edges [B|1, C, C, d] dst-major with the diagonal masked;
matching edges [B, M, C, d].
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from gmbench.graph import label_pair_mask
from gmbench.models.base import float32_matmul

from .layers import FactorMLP, GMMLICHead


def gather_nodes(x: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """x [B, M, d], nbr long [B, M, K] → x[b, nbr[b, i, k]] as [B, M, K, d]."""
    B, M, K = nbr.shape
    idx = nbr.reshape(B, M * K, 1).expand(-1, -1, x.shape[-1])
    return torch.gather(x, 1, idx).view(B, M, K, x.shape[-1])


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of x over ``dim`` where mask (broadcastable to x[..., 0]) is True; 0 if none."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


def _msg(mlp: FactorMLP, e: torch.Tensor, v_proj_src: torch.Tensor) -> torch.Tensor:
    """ρ([e_ij, v_j]) with the node half already projected and laid out like e."""
    return mlp.finish(mlp.proj("e", e) + v_proj_src)


def dense_scores(head: GMMLICHead, feats: torch.Tensor, boxes: torch.Tensor,
                 mask: torch.Tensor, nbr: Optional[torch.Tensor], nbr_mask: Optional[torch.Tensor],
                 word: torch.Tensor) -> torch.Tensor:
    """feats [B, M, D_f], boxes [B, M, 4], mask bool [B, M], nbr/nbr_mask [B, M, K] (or None
    without the instance graph), word [C, D_w] → matching logits [B, M, C] (padded slots
    hold garbage; the caller masks them before the max)."""
    C = word.shape[0]
    pairs = label_pair_mask(C, word.device)                              # label graph
    vo = head.enc_o(f=feats)                                             # [B, M, d]
    vl = head.enc_l(w=word)[None]                                        # [1, C, d]
    eo = el = em = None
    if head.inst:
        src = gather_nodes(head.enc_oe.proj("src", boxes), nbr)
        eo = head.enc_oe.finish(src + head.enc_oe.proj("dst", boxes)[:, :, None])
    if head.label:
        el = head.enc_le.finish(head.enc_le.proj("src", word)[None, None]
                                + head.enc_le.proj("dst", word)[None, :, None])  # [1, C, C, d]
    if head.match:
        em = head.enc_me.finish(head.enc_me.proj("o", feats)[:, :, None]
                                + head.enc_me.proj("l", word)[None, None])   # [B, M, C, d]
    for blk in head.blocks:
        # Node convolution (Eq. 5-8), on the states before this module.
        po, pl = {"v": vo}, {"v": vl}
        if blk.rho_oo is not None:
            msg = _msg(blk.rho_oo, eo, gather_nodes(blk.rho_oo.proj("v", vo), nbr))
            po["agg_o"] = masked_mean(msg, nbr_mask, 2)
        if blk.rho_ol is not None:
            msg = _msg(blk.rho_ol, em, blk.rho_ol.proj("v", vl)[:, None])
            po["agg_l"] = msg.mean(2)
        if blk.rho_ll is not None:
            msg = _msg(blk.rho_ll, el, blk.rho_ll.proj("v", vl)[:, None])   # src on dim 2
            pl["agg_l"] = masked_mean(msg, pairs[None], 2)
        if blk.rho_lo is not None:
            msg = _msg(blk.rho_lo, em, blk.rho_lo.proj("v", vo)[:, :, None])
            pl["agg_o"] = masked_mean(msg, mask[:, :, None], 1)
        vo, vl = blk.update(blk.phi_o, vo, **po), blk.update(blk.phi_l, vl, **pl)
        # Edge convolution (Eq. 9-12), on the updated node states.
        if blk.rho_oe is not None:
            r = blk.rho_oe.finish(gather_nodes(blk.rho_oe.proj("src", vo), nbr)
                                  + blk.rho_oe.proj("dst", vo)[:, :, None])
            eo = blk.update(blk.phi_oe, eo, e=eo, r=r)
        if blk.rho_le is not None:
            r = blk.rho_le.finish(blk.rho_le.proj("src", vl)[:, None]
                                  + blk.rho_le.proj("dst", vl)[:, :, None])
            el = blk.update(blk.phi_le, el, e=el, r=r)
        if blk.rho_me is not None:
            r = blk.rho_me.finish(blk.rho_me.proj("o", vo)[:, :, None]
                                  + blk.rho_me.proj("l", vl)[:, None])
            em = blk.update(blk.phi_me, em, e=em, r=r)
    if head.match:
        return head.dec(e=em).squeeze(-1)                                # [B, M, C]
    # w/o ILM edges: fixed pairing score, scaled dot product of the final node states
    # (in float32 under autocast: these are the scores the metric layer ranks).
    return float32_matmul(vo, vl.transpose(-1, -2)) / math.sqrt(head.out_dim)
