"""torchvision weight enums read from the torch hub cache without ever unpickling.

``enum.get_state_dict()`` goes through ``torch.hub.load_state_dict_from_url``, which on
torch 2.2 runs ``torch.load(weights_only=False)``: any file planted in the hub cache
under the enum's name would execute code. ``hub_state_dict`` is the one way gmbench
reads such weights:

1. the file is ``torch.hub.get_dir()/checkpoints/<basename of enum.url>``, downloaded
   only when absent (``torch.hub.download_url_to_file``, which checks the hash prefix
   and moves the file into place only when complete);
2. a file whose name carries a hash prefix (torchvision's ``-<hex>.pth``, torch.hub's
   convention) must have a SHA-256 starting with it, downloaded or found: the record
   says "torchvision:<enum>", so the file must be that one, not merely a file that fits;
3. it is read with ``torch.load(weights_only=True)`` and must be a flat dict of tensors.

The hash prefix is 8 hex digits for most torchvision files, which a determined attacker
can match, so (3) is the safety guarantee and (2) the integrity one.

timm (checked in timm 1.0.31): ``create_model(pretrained=True)`` loads through
safetensors or ``weights_only=True`` in its common paths, but not in all of them
(``custom_load`` models, tuple hf-hub locations); gmbench never asks timm to load
weights (``pretrained=False`` always, local files through ``load_weights_file``).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Dict, Optional
from urllib.parse import urlparse

import torch
from ..errors import WeightsError  # noqa: F401  (re-exported: raised here)
from ..utils.download import OFFLINE_ENV, offline

# torch.hub's HASH_REGEX, restricted to a prefix long enough to mean something
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")
_verified: Dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256, so rows hash once


def hub_weights_path(enum) -> Path:
    """Where torch.hub keeps (or would download) the file of a torchvision weights enum."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(enum.url).path)


def hash_prefix(filename: str) -> Optional[str]:
    """The SHA-256 prefix a file name promises (torchvision: ``resnet18-f37072fd.pth``)."""
    m = _HASH_IN_NAME.search(filename)
    return m.group(1) if m else None


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _verified[key] = h.hexdigest()
    return _verified[key]


def load_weights_file(path, hint: str) -> dict:
    """``torch.load(weights_only=True)`` of ``path``; any failure is a WeightsError naming
    the file, followed by ``hint`` (what the user should do about it)."""
    p = Path(path)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (a pickle of arbitrary objects, truncated, not torch)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"weights file {p} cannot be loaded as plain tensors "
                           f"(weights_only=True: {reason}). {hint}") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"weights file {p} holds a {type(obj).__name__}, not a state dict. {hint}")
    return obj


def hub_state_dict(enum, progress: bool = False) -> Dict[str, torch.Tensor]:
    """The state dict of a torchvision weights enum, from the hub cache or a download."""
    path = hub_weights_path(enum)
    name = f"{type(enum).__name__}.{enum.name}"
    redo = (f"Delete {path} so that it is downloaded again, or pass a local state dict file "
            f"instead of the torchvision weights.")
    expected = hash_prefix(path.name)
    if not path.is_file():
        if offline():  # a compute node: never download inside a job
            raise WeightsError(
                f"torchvision weights {name} are missing: {path} is absent and {OFFLINE_ENV}=1 "
                f"forbids downloading them. On a machine with internet run: python -m gmbench "
                f"fetch {name} (or fetch --suite NAME), with the same torch hub cache "
                f"(TORCH_HOME), or copy the file there.")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(enum.url, str(path), expected, progress=progress)
        except Exception as e:  # noqa: BLE001  (no internet, a proxy, a bad download)
            raise WeightsError(
                f"could not obtain torchvision weights {name}: {path} is absent and the "
                f"download from {enum.url} failed ({e}). Copy that file into {path.parent}, "
                f"or pass a local state dict file (or 'none' for random init).") from None
    if expected is not None:
        digest = _sha256(path)
        if not digest.startswith(expected):
            raise WeightsError(f"weights file {path} is not torchvision's {name}: its sha256 "
                               f"{digest[:16]}... does not start with {expected}. {redo}")
    state = load_weights_file(path, redo)
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"weights file {path} is not a plain state dict (entry {bad[0]!r} is "
                           f"not a tensor). {redo}")
    return state
