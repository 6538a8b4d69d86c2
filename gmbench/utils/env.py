"""Environment facts for run records: versions, device, git commit."""
from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
from pathlib import Path
from contextlib import contextmanager
from typing import Dict, Iterator, Optional

import torch

_PACKAGES = ("torch", "torchvision", "dgl", "numpy", "pandas", "pydantic")


def git_commit() -> str:
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():  # an installed wheel: site-packages may lie in another repo
        return "unknown"
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> Dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> Dict[str, object]:
    return {"versions": versions(), "device": str(device), "device_name": device_name(device),
            "git_commit": git_commit(), "host": platform.node()}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device "
                           f"(torch {torch.__version__}); use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    import os
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: an op without a deterministic kernel is named in a warning, not fatal.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


@contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block (None/0: unchanged), then restored:
    a stage with its own ``num_threads`` (detector, pretraining) leaves the run's as it was."""
    before = torch.get_num_threads()
    try:
        if n:
            torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(before)
