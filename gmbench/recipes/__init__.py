"""Training recipe parts, each a small registry (a new one is one entry in one file).

Layer: beside ``gmbench.models``, below ``gmbench.engine``, which only composes them:

* ``losses``     ``LOSSES``      ``loss.name``        → ``(logits [B, C], target [B, C]) -> scalar``
* ``optimizers`` ``OPTIMIZERS``  ``optim.name``       → ``torch.optim.Optimizer``
* ``schedules``  ``SCHEDULES``   ``optim.scheduler``  → an LR scheduler stepped once per iteration
* ``ema``        ``ModelEma``    ``train.ema``        → an exponential moving average of the weights

Augmentation presets live with the other presets in ``gmbench.data.transforms`` (``asl``).
Builders take the config blocks duck-typed, so this package never imports ``gmbench.config``.
"""
from .ema import ModelEma
from .losses import LOSSES, build_loss, resolve_loss_name
from .optimizers import OPTIMIZERS, build_optimizer
from .schedules import SCHEDULES, build_scheduler

__all__ = ["LOSSES", "OPTIMIZERS", "SCHEDULES", "ModelEma", "build_loss", "build_optimizer",
           "build_scheduler", "resolve_loss_name"]
