"""Where the current run is: the engine reports (epoch, step), a claim's heartbeat reads it.

One process trains one run at a time, so a module-level dict is enough; it is empty
until the engine's first report and reset when a new run starts.
"""
from __future__ import annotations

import time
from typing import Any, Dict

_STATE: Dict[str, Any] = {}


def reset() -> None:
    _STATE.clear()


def report(**fields: Any) -> None:
    """Record progress fields (epoch, step, epochs, steps_per_epoch) with the time."""
    _STATE.update(fields, time=time.time())


def snapshot() -> Dict[str, Any]:
    return dict(_STATE)
