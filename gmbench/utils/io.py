"""Crash-safe file writes: temp file in the same directory, fsync, rename.

A reader never sees a half-written file: after SIGKILL either the old content
or the new one is there, plus at worst a stray ``.tmp-*`` file.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

PathLike = Union[str, os.PathLike]


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


def atomic_write(path: PathLike, writer: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``writer(fileobj)`` on a temp file, then atomically move it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
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


def append_jsonl(path: PathLike, record: dict) -> None:
    """Append one JSON line so that a crash never leaves a partial line.

    The whole file is rewritten atomically: runs.jsonl holds one line per run
    (hundreds at most), so the copy is cheap and the result is always whole.
    """
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    line = json.dumps(record, sort_keys=False).encode("utf-8") + b"\n"
    atomic_write_bytes(path, old + line)


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
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not valid JSON ({e.msg}); "
                             f"remove or fix that line") from None
    return out
