"""One writer per results folder: an advisory ``fcntl`` lock held for a whole run.

The lock file (``OUT/SUITE/.lock``) holds the holder's pid and command line, so a
second ``gmbench run`` on the same folder can say who holds it. The kernel drops
the lock when the holder dies (also on SIGKILL), so a stale file never blocks. The
holder must not open the lock file a second time (a POSIX lock ends with any close).
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional


_HELD: set = set()  # fds of the locks this process holds


def _close_in_child() -> None:
    """A forked child (a DataLoader worker) must not keep the parent's lock alive: flock
    belongs to the open file, so a worker outliving a SIGKILLed parent by its 5 s watchdog
    would block the rerun. Closing the child's copy leaves the parent's lock intact."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class FolderLocked(RuntimeError):
    """Another process holds the folder's lock."""


class FolderLock:
    def __init__(self, folder: Path, name: str = ".lock"):
        self.path = Path(folder) / name
        self._fd: Optional[int] = None

    def holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
        except OSError:
            return "unknown"

    def acquire(self, wait: bool = False, poll_s: float = 1.0,
                log: Callable[[str], None] = print) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        told = False
        while True:
            try:
                # POSIX record lock, not flock: forked DataLoader workers do not inherit it,
                # so a SIGKILLed holder's orphaned workers cannot keep the folder locked
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (BlockingIOError, PermissionError):
                if not wait:
                    os.close(fd)
                    raise FolderLocked(
                        f"{self.path.parent} is in use by another gmbench process ({self.holder()}); "
                        f"wait for it to finish, pass --wait to queue behind it, or use another --out"
                    ) from None
                if not told:
                    log(f"waiting for {self.path.parent} (held by {self.holder()})")
                    told = True
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}\n".encode())
        self._fd = fd
        _HELD.add(fd)
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.lockf(self._fd, fcntl.LOCK_UN)
            finally:
                _HELD.discard(self._fd)
                os.close(self._fd)
                self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
