"""Exponential moving average of a model's weights (``train.ema: decay``).

After every optimizer step: e ← d·e + (1 − d)·θ for every floating parameter and
buffer (BatchNorm statistics included, as timm's ModelEmaV2 does); integer buffers
(``num_batches_tracked``) are copied. The EMA copy is what evaluation reports.
"""
from __future__ import annotations

import copy
from typing import Dict

import torch
import torch.nn as nn


class ModelEma(nn.Module):
    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.ema must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = model.state_dict()
        for k, e in self.module.state_dict().items():
            v = src[k].detach()
            if e.is_floating_point():
                e.mul_(self.decay).add_(v.to(e.dtype), alpha=1.0 - self.decay)
            else:
                e.copy_(v)

    def train(self, mode: bool = True) -> "ModelEma":
        super().train(False)  # the average is only ever evaluated
        return self

    def state_dict_ema(self) -> Dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict_ema(self, state: Dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
