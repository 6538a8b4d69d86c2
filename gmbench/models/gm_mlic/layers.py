"""Parameters of the GM-MLIC ILMS module (encoder, GNB modules, decoder).

Both backends run the SAME ``GMMLICHead``; they differ only in how they lay out
nodes and edges, so their state_dicts are identical by construction.

Every MLP is a ``FactorMLP``: its input is a concatenation of named parts, and the
first Linear is stored per part (W [a, b] + c = W_a a + W_b b + c). A backend
projects each part where it is cheapest (per node rather than per edge) and
combines the projections per edge, which is exact and avoids C·(C-1)·d work on
label edges and M·C·d work on matching edges for the node halves.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn

from gmbench.models.base import Float32Linear


class FactorMLP(nn.Module):
    """MLP over the concatenation of named parts.

    Linear(sum of parts → hidden) → [ReLU → Linear(hidden → hidden)] × (layers-2)
    → ReLU → Linear(hidden → out) → LayerNorm(out) (if ``norm``).
    Only the first part's projection has a bias. ``fp32_out``: the last Linear computes in
    float32 also under autocast (the decoder, whose output the metric layer ranks).
    """

    def __init__(self, parts: Dict[str, int], hidden: int, out: int, layers: int = 2,
                 norm: bool = True, fp32_out: bool = False):
        super().__init__()
        self.first = nn.ModuleDict({name: nn.Linear(d, hidden, bias=(i == 0))
                                    for i, (name, d) in enumerate(parts.items())})
        tail: List[nn.Module] = []
        for _ in range(layers - 2):
            tail += [nn.ReLU(), nn.Linear(hidden, hidden)]
        tail += [nn.ReLU(), (Float32Linear if fp32_out else nn.Linear)(hidden, out)]
        if norm:
            tail.append(nn.LayerNorm(out))
        self.tail = nn.Sequential(*tail)

    def proj(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """First-layer projection of one part: [..., d_part] → [..., hidden]."""
        return self.first[name](x)

    def finish(self, pre: torch.Tensor) -> torch.Tensor:
        """The rest of the MLP on summed projections: [..., hidden] → [..., out]."""
        return self.tail(pre)

    def forward(self, **parts: torch.Tensor) -> torch.Tensor:
        """All parts given at once (broadcastable shapes) → [..., out]."""
        if set(parts) != set(self.first):
            raise ValueError(f"FactorMLP expects parts {sorted(self.first)}, got {sorted(parts)}")
        pre = None
        for name, x in parts.items():
            p = self.first[name](x)
            pre = p if pre is None else pre + p
        return self.tail(pre)


class GNBModule(nn.Module):
    """One graph-convolution module: node convolution (Eq. 5-8), then edge convolution
    (Eq. 9-12). Relations switched off by the ablation flags have no parameters.

    ``last``: the instance and label edge states after the final module are read by
    nothing (the decoder reads matching edges only), so their edge convolution is
    not built.
    """

    def __init__(self, d_in: int, d: int, inst: bool, label: bool, match: bool, last: bool,
                 mlp: dict, residual: bool = False):
        super().__init__()
        # x ← x + φ(...) where the width does not change (not in the paper; off by default).
        self.residual = residual and d_in == d
        m = lambda parts: FactorMLP(parts, d, d, **mlp)  # noqa: E731
        self.rho_oo = m({"e": d_in, "v": d_in}) if inst else None     # ρ̂_on: instance ← instance
        self.rho_ol = m({"e": d_in, "v": d_in}) if match else None    # ρ̃_on: instance ← label
        self.phi_o = m({"v": d_in, **({"agg_o": d} if inst else {}),
                        **({"agg_l": d} if match else {})})            # φ_on
        self.rho_ll = m({"e": d_in, "v": d_in}) if label else None    # ρ̂_ln: label ← label
        self.rho_lo = m({"e": d_in, "v": d_in}) if match else None    # ρ̃_ln: label ← instance
        self.phi_l = m({"v": d_in, **({"agg_l": d} if label else {}),
                        **({"agg_o": d} if match else {})})            # φ_ln
        edge_o, edge_l = inst and not last, label and not last
        self.rho_oe = m({"src": d, "dst": d}) if edge_o else None     # Eq. 9
        self.phi_oe = m({"e": d_in, "r": d}) if edge_o else None
        self.rho_le = m({"src": d, "dst": d}) if edge_l else None     # Eq. 10
        self.phi_le = m({"e": d_in, "r": d}) if edge_l else None
        self.rho_me = m({"o": d, "l": d}) if match else None          # Eq. 11
        self.phi_me = m({"e": d_in, "r": d}) if match else None       # Eq. 12

    def update(self, phi: FactorMLP, old: torch.Tensor, **parts: torch.Tensor) -> torch.Tensor:
        """New state φ(parts), plus ``old`` when this module is residual."""
        new = phi(**parts)
        return new + old if self.residual else new


class GMMLICHead(nn.Module):
    """Encoder (Eq. 4) + k GNB modules + decoder (Eq. 13).

    feat_dim: instance feature width; word_dim: label word-embedding width.
    """

    def __init__(self, feat_dim: int, word_dim: int, enc_dim: int, dims: List[int],
                 use_instance_graph: bool = True, use_label_graph: bool = True,
                 use_matching_edges: bool = True, mlp_layers: int = 2, norm: bool = True,
                 residual: bool = False):
        super().__init__()
        self.inst, self.label, self.match = use_instance_graph, use_label_graph, use_matching_edges
        mlp = dict(layers=mlp_layers, norm=norm)
        e = lambda parts: FactorMLP(parts, enc_dim, enc_dim, **mlp)  # noqa: E731
        self.enc_o = e({"f": feat_dim})                                   # v^o = f
        self.enc_l = e({"w": word_dim})                                   # v^l = w
        self.enc_oe = e({"src": 4, "dst": 4}) if self.inst else None      # e^o = [B̂_i, B̂_j]
        self.enc_le = e({"src": word_dim, "dst": word_dim}) if self.label else None  # [w_i, w_j]
        self.enc_me = e({"o": feat_dim, "l": word_dim}) if self.match else None  # [v^o_i, v^l_j]
        ins = [enc_dim] + list(dims[:-1])
        self.blocks = nn.ModuleList(
            GNBModule(di, do, self.inst, self.label, self.match, last=(i == len(dims) - 1), mlp=mlp,
                      residual=residual)
            for i, (di, do) in enumerate(zip(ins, dims)))
        self.out_dim = dims[-1]
        # Decoder: matching-edge state → one logit (sigmoid gives S_jc).
        self.dec: Optional[FactorMLP] = (FactorMLP({"e": dims[-1]}, dims[-1], 1, mlp_layers,
                                                   norm=False, fp32_out=True)
                                         if self.match else None)

    def flags(self) -> str:
        off = [n for n, on in (("Go", self.inst), ("Gl", self.label), ("ILM", self.match)) if not on]
        return "full" if not off else "w/o " + ",".join(off)
