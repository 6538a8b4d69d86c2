"""Training recipe parts, each a registry in ``gmbench.registry`` (a new one is one file).

Layer: above ``gmbench.models``, below ``gmbench.engine``, which only composes them:

* ``losses``     ``LOSSES``      ``loss.name``        → ``(logits [B, C], target [B, C]) -> scalar``
* ``optimizers`` ``OPTIMIZERS``  ``optim.name``       → ``torch.optim.Optimizer``
* ``schedules``  ``SCHEDULES``   ``optim.scheduler``  → an LR scheduler stepped once per iteration
* ``ema``        ``ModelEma``    ``train.ema``        → an exponential moving average of the weights
* ``settings``   the ``loss:`` and ``optim:`` config blocks: common keys plus every entry's settings

Each entry registers with its own typed settings (``register_loss(name, settings=...)``
and the like); ``gmbench list`` shows them. Every module of this package is imported
here, so a new file with a registration needs no other edit. Methods register their
own losses from their own package (GM-MLIC: ``gmbench/models/gm_mlic/loss.py``).
Augmentation presets register in ``gmbench.data.transforms`` (``AUGMENTATIONS``).
Builders take the config blocks duck-typed, so this package never imports ``gmbench.config``.
"""
import importlib
import pkgutil

from gmbench.registry import LOSSES, OPTIMIZERS, SCHEDULES

from .ema import ModelEma
from .losses import build_loss, resolve_loss_name
from .optimizers import build_optimizer
from .schedules import build_scheduler

for _mod in pkgutil.iter_modules(__path__):  # registration is the import's side effect
    importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["LOSSES", "OPTIMIZERS", "SCHEDULES", "ModelEma", "build_loss", "build_optimizer",
           "build_scheduler", "resolve_loss_name"]
