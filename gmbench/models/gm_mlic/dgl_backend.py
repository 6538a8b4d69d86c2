"""DGL backend: the ILMS forward on a batched heterograph (keys: ``gmbench.graph.keys``).

Every temporary lives inside ``g.local_scope()``; per-edge combinations of per-node
projections use built-in ``apply_edges`` functions, edge updates use ``apply_edges``,
and every mean/max is ``update_all`` with a built-in reducer.
"""
from __future__ import annotations

import math

import torch

from gmbench.graph import keys as K
from gmbench.graph.dgl_util import require_dgl
from gmbench.models.base import at_least_f32, no_autocast

from .layers import FactorMLP, GMMLICHead


def _pair(g, etype, mlp: FactorMLP, src_name: str, dst_name: str, x_src, x_dst):
    """mlp([x_src_u, x_dst_v]) on every edge of ``etype``: project per node, add per edge."""
    fn = require_dgl().function
    st, _, dt = etype
    g.nodes[st].data[K.T_SRC] = mlp.proj(src_name, x_src)
    g.nodes[dt].data[K.T_DST] = mlp.proj(dst_name, x_dst)
    g.apply_edges(fn.u_add_v(K.T_SRC, K.T_DST, K.T_PRE), etype=etype)
    return mlp.finish(g.edges[etype].data[K.T_PRE])


def _message(g, etype, mlp: FactorMLP, node_side: str, x_node) -> torch.Tensor:
    """ρ([e, v]) per edge of ``etype``, v read at the ``node_side`` ('u' or 'v') end."""
    fn = require_dgl().function
    st, _, dt = etype
    g.edges[etype].data[K.T_PRE] = mlp.proj("e", g.edges[etype].data[K.F_STATE])
    if node_side == "u":
        g.nodes[st].data[K.T_SRC] = mlp.proj("v", x_node)
        g.apply_edges(fn.e_add_u(K.T_PRE, K.T_SRC, K.T_MSG), etype=etype)
    else:
        g.nodes[dt].data[K.T_DST] = mlp.proj("v", x_node)
        g.apply_edges(fn.e_add_v(K.T_PRE, K.T_DST, K.T_MSG), etype=etype)
    return mlp.finish(g.edges[etype].data[K.T_MSG])


def _mean_into(g, etype, msg: torch.Tensor, out_key: str) -> torch.Tensor:
    """Mean of per-edge ``msg`` at the destination nodes of ``etype`` (0 where none)."""
    fn = require_dgl().function
    g.edges[etype].data[K.T_MSG] = msg
    g.update_all(fn.copy_e(K.T_MSG, K.T_MSG), fn.mean(K.T_MSG, out_key), etype=etype)
    return g.nodes[etype[2]].data[out_key]


def _edge_update(g, etype, blk, phi: FactorMLP, r: torch.Tensor) -> None:
    """e ← φ([e, r]) (plus e in a residual module) on every edge of ``etype``."""
    if g.num_edges(etype) == 0:  # DGL skips UDFs on edgeless relations; keep the width right
        e = g.edges[etype].data[K.F_STATE]
        g.edges[etype].data[K.F_STATE] = blk.update(phi, e, e=e, r=r)
        return
    g.edges[etype].data[K.T_MSG] = r
    g.apply_edges(lambda edges: {K.F_STATE: blk.update(phi, edges.data[K.F_STATE],
                                                       e=edges.data[K.F_STATE],
                                                       r=edges.data[K.T_MSG])}, etype=etype)


def dgl_scores(head: GMMLICHead, g, feats: torch.Tensor, boxes: torch.Tensor,
               word: torch.Tensor):
    """g from ``build_dgl_graph``; feats [N_o, D_f], boxes [N_o, 4] of the valid instances
    in graph order; word [C, D_w].

    Returns (logits [E_match] on MATCH edges in graph order, pooled [B·C] = max over each
    label node's instances).
    """
    fn = require_dgl().function
    with g.local_scope():
        cid = g.nodes[K.LABEL].data[K.F_CID]
        vo = head.enc_o(f=feats)
        vl = head.enc_l(w=word)[cid]
        if head.inst:
            g.edges[K.KNN].data[K.F_STATE] = _pair(g, K.KNN, head.enc_oe, "src", "dst", boxes, boxes)
        if head.label:
            g.edges[K.CO].data[K.F_STATE] = _pair(g, K.CO, head.enc_le, "src", "dst",
                                                  word[cid], word[cid])
        if head.match:
            g.edges[K.MATCH].data[K.F_STATE] = _pair(g, K.MATCH, head.enc_me, "o", "l",
                                                     feats, word[cid])
        for blk in head.blocks:
            po, pl = {"v": vo}, {"v": vl}
            if blk.rho_oo is not None:
                po["agg_o"] = _mean_into(g, K.KNN, _message(g, K.KNN, blk.rho_oo, "u", vo), K.T_AGG_O)
            if blk.rho_ol is not None:
                # Message on the one MATCH state, delivered to instances along MATCH_REV.
                msg = _message(g, K.MATCH, blk.rho_ol, "v", vl)
                po["agg_l"] = _mean_into(g, K.MATCH_REV, msg, K.T_AGG_L)
            if blk.rho_ll is not None:
                pl["agg_l"] = _mean_into(g, K.CO, _message(g, K.CO, blk.rho_ll, "u", vl), K.T_AGG_L)
            if blk.rho_lo is not None:
                msg = _message(g, K.MATCH, blk.rho_lo, "u", vo)
                pl["agg_o"] = _mean_into(g, K.MATCH, msg, K.T_AGG_M)
            vo, vl = blk.update(blk.phi_o, vo, **po), blk.update(blk.phi_l, vl, **pl)
            if blk.rho_oe is not None:
                _edge_update(g, K.KNN, blk, blk.phi_oe, _pair(g, K.KNN, blk.rho_oe, "src", "dst", vo, vo))
            if blk.rho_le is not None:
                _edge_update(g, K.CO, blk, blk.phi_le, _pair(g, K.CO, blk.rho_le, "src", "dst", vl, vl))
            if blk.rho_me is not None:
                _edge_update(g, K.MATCH, blk, blk.phi_me, _pair(g, K.MATCH, blk.rho_me, "o", "l", vo, vl))
        if head.match:  # the decoder's last Linear is float32 (Float32Linear)
            g.apply_edges(lambda edges: {K.T_LOGIT: head.dec(e=edges.data[K.F_STATE])},
                          etype=K.MATCH)
        # The readout stays float32: under CUDA autocast DGL casts its message-passing inputs
        # to the autocast dtype, and bfloat16 logits tie (docs/gm_mlic.md).
        with no_autocast(vo):
            if not head.match:  # w/o ILM edges: scaled dot product of the final node states
                g.nodes[K.INST].data[K.F_STATE] = at_least_f32(vo) / math.sqrt(head.out_dim)
                g.nodes[K.LABEL].data[K.F_STATE] = at_least_f32(vl)
                g.apply_edges(fn.u_dot_v(K.F_STATE, K.F_STATE, K.T_LOGIT), etype=K.MATCH)
            g.update_all(fn.copy_e(K.T_LOGIT, K.T_LOGIT), fn.max(K.T_LOGIT, K.T_POOL),
                         etype=K.MATCH)
        return (g.edges[K.MATCH].data[K.T_LOGIT].squeeze(-1),
                g.nodes[K.LABEL].data[K.T_POOL].squeeze(-1))
