"""SIGINT/SIGTERM as a flag that every long phase checks at a safe boundary.

One process-wide guard (installed by ``run`` and ``extract``) records the first
signal; the training loop checks it per step, evaluation per batch, the runner
between rows and after the tables, extraction per batch. Whoever sees it first
saves what it must and raises :class:`Interrupted`, which the CLI turns into
exit code 128 + signum. A signal is therefore never lost: even one that arrives
in the last second of a run's final evaluation makes the process exit non-zero.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Union

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: Optional[int] = None


class Interrupted(RuntimeError):
    """A signal arrived; whatever was needed to resume has been written."""

    def __init__(self, signum: int, where: str = "", checkpoint: Union[Path, str, None] = None):
        what = f" during {where}" if where else ""
        saved = f"; checkpoint {checkpoint}" if checkpoint else ""
        super().__init__(f"stopped by signal {signum}{what}{saved}; re-run the same command to resume")
        self.signum = signum


def _handle(signum, frame):
    global _received
    if _received is None:
        _received = signum


def received() -> Optional[int]:
    """The first signal caught by the active guard, or None."""
    return _received


def reset() -> None:
    global _received
    _received = None


def check(where: str = "", checkpoint=None) -> None:
    """Raise :class:`Interrupted` if a signal has arrived (this process only)."""
    if _received is not None:
        raise Interrupted(_received, where, checkpoint)


@contextmanager
def guard():
    """Catch SIGINT/SIGTERM as a flag for the duration (nested guards share the flag).

    Outside the main thread signals cannot be caught; the guard is then a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in _SIGNALS}
    outermost = all(h is not _handle for h in old.values())
    if outermost:
        reset()
    for s in _SIGNALS:
        signal.signal(s, _handle)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if outermost:
            reset()
