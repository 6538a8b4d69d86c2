"""An independent GM-MLIC forward (Eq. 1-14), for tests only.

Written apart from the model's shared layers: per image, per node, per edge, in Python
loops, in float64; every MLP is ONE Linear over the concatenation of its inputs in the
paper's order (then ReLU/Linear layers and LayerNorm), its weight built by concatenating the
model's factorised first-layer parts. That mapping (which part is which slice of the
concatenation) is what the backends' factorisation could get wrong without a test seeing it.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# The paper's concatenation order of each MLP's input (Eq. 1-4 encoders, 5-8 node MLPs,
# 9-12 edge MLPs, 13 decoder), by the name the model gives each factorised part.
ORDER = {
    "enc_o": ("f",), "enc_l": ("w",),
    "enc_oe": ("src", "dst"), "enc_le": ("src", "dst"), "enc_me": ("o", "l"),
    "rho_oo": ("e", "v"), "rho_ol": ("e", "v"), "rho_ll": ("e", "v"), "rho_lo": ("e", "v"),
    "phi_o": ("v", "agg_o", "agg_l"), "phi_l": ("v", "agg_l", "agg_o"),
    "rho_oe": ("src", "dst"), "rho_le": ("src", "dst"), "rho_me": ("o", "l"),
    "phi_oe": ("e", "r"), "phi_le": ("e", "r"), "phi_me": ("e", "r"),
    "dec": ("e",),
}


class RefMLP:
    """One nn.Linear over cat(parts in ``order``), then the model's remaining layers."""

    def __init__(self, fmlp, order: Sequence[str]):
        order = [n for n in order if n in fmlp.first]
        assert sorted(order) == sorted(fmlp.first), (order, list(fmlp.first))
        w = torch.cat([fmlp.first[n].weight.detach().double() for n in order], dim=1)
        biases = [m.bias for m in fmlp.first.values() if m.bias is not None]
        assert len(biases) == 1
        self.first = nn.Linear(w.shape[1], w.shape[0]).double()
        with torch.no_grad():
            self.first.weight.copy_(w)
            self.first.bias.copy_(biases[0].detach().double())
        self.rest: List = []
        for mod in fmlp.tail:
            if isinstance(mod, nn.Linear):
                self.rest.append(("linear", mod.weight.detach().double(), mod.bias.detach().double()))
            elif isinstance(mod, nn.LayerNorm):
                self.rest.append(("norm", mod.weight.detach().double(), mod.bias.detach().double()))
        self.order = order

    def __call__(self, **parts: torch.Tensor) -> torch.Tensor:
        x = self.first(torch.cat([parts[n] for n in self.order]))
        for kind, w, b in self.rest:
            if kind == "linear":
                x = w @ torch.relu(x) + b
            else:
                x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-5) * w + b
        return x


def _standardise(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-5)


def knn_lists(boxes: torch.Tensor, k: int) -> List[List[int]]:
    """For each instance i, its min(k, m-1) nearest others by box-centre distance."""
    m = len(boxes)
    cx = [((boxes[i, 0] + boxes[i, 2]) / 2, (boxes[i, 1] + boxes[i, 3]) / 2) for i in range(m)]
    out = []
    for i in range(m):
        d = sorted((float((cx[i][0] - cx[j][0]) ** 2 + (cx[i][1] - cx[j][1]) ** 2), j)
                   for j in range(m) if j != i)
        out.append([j for _, j in d[:k]])
    return out


def _mean(xs: List[torch.Tensor], d: int) -> torch.Tensor:
    return torch.stack(xs).mean(0) if xs else torch.zeros(d, dtype=torch.float64)


def reference_logits(model, feats: torch.Tensor, boxes: torch.Tensor, word) -> torch.Tensor:
    """Matching logits S [m, C] of ONE image: feats [m, D], boxes [m, 4] (valid instances,
    already cut to top_m), word [C, D_w] raw label attributes."""
    cfg, head = model.cfg, model.head
    mlp = {}

    def get(owner, name):
        key = (id(owner), name)
        if key not in mlp:
            mlp[key] = RefMLP(getattr(owner, name), ORDER[name])
        return mlp[key]

    f = [_standardise(x.double()) for x in feats]
    w = [_standardise(torch.as_tensor(x).double()) for x in word]
    B = [b.double() for b in boxes]
    m, C = len(f), len(w)
    inst, label, match = cfg.use_instance_graph, cfg.use_label_graph, cfg.use_matching_edges
    nbrs = knn_lists(boxes, cfg.knn_k) if inst else [[] for _ in range(m)]
    vo = [get(head, "enc_o")(f=f[i]) for i in range(m)]
    vl = [get(head, "enc_l")(w=w[c]) for c in range(C)]
    eo = {(j, i): get(head, "enc_oe")(src=B[j], dst=B[i]) for i in range(m) for j in nbrs[i]}
    el = ({(c2, c): get(head, "enc_le")(src=w[c2], dst=w[c]) for c in range(C) for c2 in range(C)
           if c2 != c} if label else {})
    em = ({(j, c): get(head, "enc_me")(o=f[j], l=w[c]) for j in range(m) for c in range(C)}
          if match else {})
    d_in = cfg.enc_dim
    for k, (blk, d) in enumerate(zip(head.blocks, cfg.dims)):
        res = cfg.residual and d_in == d
        last = k == len(cfg.dims) - 1
        new_vo, new_vl = [], []
        for i in range(m):
            parts = {"v": vo[i]}
            if inst:
                parts["agg_o"] = _mean([get(blk, "rho_oo")(e=eo[(j, i)], v=vo[j]) for j in nbrs[i]], d)
            if match:
                parts["agg_l"] = _mean([get(blk, "rho_ol")(e=em[(i, c)], v=vl[c]) for c in range(C)], d)
            new_vo.append(get(blk, "phi_o")(**parts) + (vo[i] if res else 0))
        for c in range(C):
            parts = {"v": vl[c]}
            if label:
                parts["agg_l"] = _mean([get(blk, "rho_ll")(e=el[(c2, c)], v=vl[c2])
                                        for c2 in range(C) if c2 != c], d)
            if match:
                parts["agg_o"] = _mean([get(blk, "rho_lo")(e=em[(j, c)], v=vo[j]) for j in range(m)], d)
            new_vl.append(get(blk, "phi_l")(**parts) + (vl[c] if res else 0))
        vo, vl = new_vo, new_vl
        if inst and not last:
            eo = {(j, i): get(blk, "phi_oe")(e=e, r=get(blk, "rho_oe")(src=vo[j], dst=vo[i]))
                  + (e if res else 0) for (j, i), e in eo.items()}
        if label and not last:
            el = {(c2, c): get(blk, "phi_le")(e=e, r=get(blk, "rho_le")(src=vl[c2], dst=vl[c]))
                  + (e if res else 0) for (c2, c), e in el.items()}
        if match:
            em = {(j, c): get(blk, "phi_me")(e=e, r=get(blk, "rho_me")(o=vo[j], l=vl[c]))
                  + (e if res else 0) for (j, c), e in em.items()}
        d_in = d
    S = torch.empty(m, C, dtype=torch.float64)
    for j in range(m):
        for c in range(C):
            S[j, c] = (get(head, "dec")(e=em[(j, c)])[0] if match
                       else torch.dot(vo[j], vl[c]) / math.sqrt(cfg.dims[-1]))
    return S


def reference_outputs(model, batch: Dict[str, torch.Tensor], word):
    """Per image (probs [C], slot scores [m, C]) from ``reference_logits``, cache-mode batch."""
    out = []
    for b in range(batch["box_mask"].shape[0]):
        valid = batch["box_mask"][b].nonzero().flatten()[: model.cfg.top_m]
        valid = valid[valid < model.cfg.top_m]
        S = reference_logits(model, batch["inst_feat"][b, valid], batch["boxes"][b, valid], word)
        out.append((torch.sigmoid(S.max(0).values), torch.sigmoid(S)))
    return out
