"""Crash-safe file writes: temp file in the same directory, fsync, rename.

A reader never sees a half-written file: after SIGKILL either the old content
or the new one is there, plus at worst a stray ``.tmp-*`` file, which
:func:`remove_stale_tmp` clears once the folder's lock is held. A full disk is
reported as :class:`DiskFull` naming the file, whatever layer (torch's zip writer
included) hit it.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, List, Optional, Union

PathLike = Union[str, os.PathLike]
TMP_PREFIX = ".tmp-"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """No space left while writing a file; nothing half-written was left behind."""


class RecordsError(ValueError):
    """A line of a JSONL records file is not a record."""


_UNSAFE = re.compile(r"[/\\\x00]")


def safe_name(name: str, what: str = "name") -> str:
    """``name`` as one path component, or a ValueError: no separators, no ``..``, not hidden.

    The one gate through which suite names (and anything else a user writes) become
    file or folder names, so that no setting can write outside ``--out``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    if _UNSAFE.search(name) or name in (".", "..") or name.startswith(".") or ".." in name:
        raise ValueError(f"{what} {name!r} cannot be used as a file name: it may not contain "
                         f"'/', '\\', '..' or start with '.'; rename it")
    return name


def _disk_full_in(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return True
        # torch's zip writer reports ENOSPC as "file write failed" without an errno
        if isinstance(exc, RuntimeError) and "write failed" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, writer: Callable[[io.BufferedWriter], None],
                 before_replace: Optional[Callable[[Path], None]] = None) -> Path:
    """Call ``writer(fileobj)`` on a temp file, then atomically move it to ``path``.

    ``before_replace(tmp)`` runs on the complete temp file just before the move (a checksum
    sidecar written there exists whenever ``path`` does, whatever moment a kill lands)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=str(path.parent))
    except OSError as e:
        if e.errno in _NO_SPACE:
            raise DiskFull(e.errno, f"no space left on device to write {path}; free space "
                                    f"and re-run (finished work is kept)") from e
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(Path(tmp))
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, Exception) and _disk_full_in(e):
            free = shutil.disk_usage(path.parent).free
            raise DiskFull(errno.ENOSPC, f"no space left on device to write {path} "
                                         f"({free / 2**20:.0f} MiB free); free space and re-run "
                                         f"(finished work is kept, the old file is intact)") from e
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    import torch
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_numpy_save(path: PathLike, array) -> Path:
    import numpy as np
    return atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def cache_home() -> Path:
    """gmbench's own cache: ``GMBENCH_CACHE``, default ``~/.cache/gmbench`` (generated data,
    the synthetic pretraining, derived data of read-only dataset folders). Read on each call, so
    a test or a job can point it elsewhere."""
    return Path(os.environ.get("GMBENCH_CACHE", "~/.cache/gmbench")).expanduser()


def config_digest(obj: Any) -> str:
    """16 hex digits of the sha256 of a JSON-able object with sorted keys: the one hash that
    names run ids, records' ``config_hash`` and trained detectors."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def sha256_file(path: PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def remove_stale_tmp(folder: PathLike) -> List[Path]:
    """Delete the temp files that interrupted atomic writes left under ``folder``.

    Only safe while no other writer is active there: call it with the folder's lock held.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = []
    for p in folder.rglob(f"{TMP_PREFIX}*"):
        if p.is_file():
            try:
                p.unlink()
                gone.append(p)
            except OSError:
                pass
    return gone


def append_jsonl(path: PathLike, record: dict,
                 unless: Optional[Callable[[bytes], bool]] = None) -> bool:
    """Append one JSON line so that a crash never leaves a partial line.

    The whole file is rewritten atomically (runs.jsonl holds one line per run,
    hundreds at most), under an exclusive ``fcntl`` lock on the containing folder,
    so concurrent appenders, even in other processes, never lose a record.
    ``unless(old_bytes)`` is asked under that lock: True leaves the file as it is
    (exactly-once appends). Returns whether the line was appended.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=False).encode("utf-8") + b"\n"
    # flock on the folder itself: no lock file is left beside the records
    fd = os.open(str(path.parent), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        old = path.read_bytes() if path.exists() else b""
        if unless is not None and unless(old):
            return False
        if old and not old.endswith(b"\n"):
            old += b"\n"
        atomic_write_bytes(path, old + line)
    finally:
        os.close(fd)  # closing the descriptor releases the lock
    return True


def read_jsonl(path: PathLike) -> list:
    """Read a JSONL file; a malformed line is an error naming file and line."""
    path = Path(path)
    out = []
    if not path.exists():
        return out
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordsError(f"{path}:{i}: not valid JSON ({e.msg}); "
                               f"remove or fix that line") from None
        if not isinstance(rec, dict):
            raise RecordsError(f"{path}:{i}: expected a JSON object (one record per line), got "
                               f"{type(rec).__name__}; remove or fix that line")
        out.append(rec)
    return out
