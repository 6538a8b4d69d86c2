"""Every exception type gmbench raises on purpose, in one module low in the layers.

Lower layers (data, models, instances) raise these without importing the layers that
catch them (engine, runner, cli). The CLI maps each to an exit code: configuration and
table problems to 2, data, weights, cache and checkpoint problems to 1.
The utilities' own errors (``DiskFull``, ``RecordsError``,
``Interrupted``) live with the utilities, one layer down, and are re-exported here
(``gmbench.utils.checkpoint.CheckpointError`` too, but it is not re-exported: that module
imports torch, and this one must stay light).
"""
from __future__ import annotations

from .utils.io import DiskFull, RecordsError  # noqa: F401
from .utils.signals import Interrupted  # noqa: F401


class ConfigError(ValueError):
    """Invalid configuration; the CLI prints it and exits with code 2."""


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class AnnotationError(ValueError):
    """An annotation file that exists but cannot be parsed: names the file, the entry and
    what is wrong. A data problem found while reading (the CLI exits 1)."""


class BadImageError(RuntimeError):
    """An image file that cannot be decoded."""


class WeightsError(RuntimeError):
    """A weights file that cannot be trusted or read (a runtime failure: the CLI exits 1)."""


class CacheError(ValueError):
    """A cache directory that is missing, incomplete, corrupt or for other data."""


class NoBoxesError(ValueError):
    """The dataset/split has no box annotations to train a detector on."""


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses (``train.max_bad_steps``)."""


class TableError(ValueError):
    """Records that cannot be tabulated as asked (a clear message; the CLI exits 2)."""
