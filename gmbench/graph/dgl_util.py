"""Lazy DGL import: gmbench imports and runs (dense backend) without DGL."""
from __future__ import annotations

import os
from typing import Dict, Tuple

import torch

WORKING_STACKS = (
    "torch==2.2.1 + dgl==2.1.0 + torchdata==0.7.1 + numpy<2 + setuptools<70 + pydantic "
    "(CPU; `pip install -c constraints.txt -e '.[dgl]'`), or DGL's CUDA wheels for torch 2.4 "
    "(https://data.dgl.ai/wheels/torch-2.4/cu124/repo.html). DGL has no build for torch>=2.5; "
    "there use backend=dense (or auto)")

_import_error: Dict[str, str] = {}
_device_ok: Dict[str, Tuple[bool, str]] = {}


def require_dgl():
    """Import and return ``dgl``, or raise one clear error naming working versions."""
    if "err" in _import_error:
        raise ImportError(f"DGL is needed here but did not import ({_import_error['err']}). "
                          f"Working versions: {WORKING_STACKS}.")
    os.environ.setdefault("DGLBACKEND", "pytorch")
    try:
        import dgl  # noqa: F401
    except Exception as e:  # DGL fails with ImportError, OSError or pydantic errors
        _import_error["err"] = f"{type(e).__name__}: {e}"
        return require_dgl()
    return dgl


def dgl_runs_on(device: torch.device) -> Tuple[bool, str]:
    """(True, "") when DGL imports and can hold a graph on ``device``; else (False, why)."""
    key = str(device)
    if key not in _device_ok:
        try:
            dgl = require_dgl()
            if torch.device(device).type != "cpu":
                dgl.graph(([0], [0])).to(device)  # CPU-only DGL builds raise here
            _device_ok[key] = (True, "")
        except Exception as e:
            _device_ok[key] = (False, f"{type(e).__name__}: {e}".splitlines()[0])
    return _device_ok[key]
