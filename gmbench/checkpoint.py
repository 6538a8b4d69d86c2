"""Checkpoints: atomic writes, ``weights_only=True`` loads, last-K retention.

A checkpoint holds model, optimizer, scheduler and AMP-scaler state, the RNG
states (python, numpy, torch, CUDA), the epoch and the number of batches of that
epoch already done, so a run resumes mid-epoch exactly where it stopped.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .utils.io import atomic_torch_save

_NAME = re.compile(r"^ckpt-e(\d+)-s(\d+)\.pt$")


def rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        # as plain types: weights_only loading refuses numpy arrays
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_name(epoch: int, step: int) -> str:
    return f"ckpt-e{epoch:04d}-s{step:07d}.pt"


def list_checkpoints(ckpt_dir: Path) -> List[Path]:
    """Checkpoints in ``ckpt_dir``, oldest first by (epoch, step)."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append(((int(m.group(1)), int(m.group(2))), p))
    return [p for _, p in sorted(found)]


def save(ckpt_dir: Path, state: Dict[str, Any], keep_last: int) -> Path:
    """Write ``state`` as ckpt-e<epoch>-s<step>.pt, then prune to the last ``keep_last``."""
    path = ckpt_dir / checkpoint_name(state["epoch"], state["step"])
    atomic_torch_save(state, path)
    for old in list_checkpoints(ckpt_dir)[:-max(1, keep_last)]:
        old.unlink(missing_ok=True)
    return path


def load(path: Path, map_location="cpu") -> Dict[str, Any]:
    return torch.load(str(path), map_location=map_location, weights_only=True)


def load_latest(ckpt_dir: Path, map_location="cpu") -> Optional[Dict[str, Any]]:
    ckpts = list_checkpoints(ckpt_dir)
    return load(ckpts[-1], map_location) if ckpts else None
