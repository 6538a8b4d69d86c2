"""The shared metric layer: ``evaluate(probs, targets)`` and friends.

Importable with numpy alone; torch is only needed to pass tensors or to gather
across ranks (``MetricAccumulator.gather``).
"""
from .accumulate import MetricAccumulator
from .core import (METRICS_VERSION, NoPositiveClassWarning, average_precision, conventions,
                   evaluate, format_percent, topk_mask)

__all__ = ["evaluate", "conventions", "format_percent", "MetricAccumulator",
           "NoPositiveClassWarning", "METRICS_VERSION", "average_precision", "topk_mask"]
