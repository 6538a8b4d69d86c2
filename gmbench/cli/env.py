"""``python -m gmbench env``: which stack this is, whether DGL runs, which GM-MLIC backend.

The stack is "pinned" when torch, torchvision and dgl are the versions constraints.txt pins
for this Python (the README's install on 3.10-3.12), "current" when DGL is absent (GM-MLIC
runs its dense backend), and "other" otherwise (e.g. DGL's own CUDA wheels).
"""
from __future__ import annotations

import json
import platform
import re
from pathlib import Path
from typing import Dict, Optional

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"
STACK_PACKAGES = ("torch", "torchvision", "dgl")


def add_parser(sub) -> None:
    p = sub.add_parser("env", help="print the stack, DGL availability and GM-MLIC's backend")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(func=cmd_env)


def _marker_holds(marker: str) -> bool:
    if not marker.strip():
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # packaging comes with pytest/pip, but is no core dependency
        return True
    return Marker(marker).evaluate()


def pinned_versions(path: Path = CONSTRAINTS) -> Optional[Dict[str, str]]:
    """{name: version} that ``path`` pins for this Python, for STACK_PACKAGES; {} when none
    applies here (Python 3.13+); None without the file (not a source checkout)."""
    if not path.is_file():
        return None
    out: Dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\s*([A-Za-z0-9_.-]+)==([^\s;]+)\s*(?:;(.*))?$", line.split("#")[0])
        if m and m.group(1).lower() in STACK_PACKAGES and _marker_holds(m.group(3) or ""):
            out[m.group(1).lower()] = m.group(2)
    return out


def stack_name(installed: Dict[str, Optional[str]], pins: Optional[Dict[str, str]]) -> str:
    """"pinned", "current" or "other" (see the module docstring); versions without +local."""
    base = {k: (v or "").split("+")[0] or None for k, v in installed.items()}
    if pins and all(base.get(k) == v for k, v in pins.items()):
        return "pinned"
    return "current" if base.get("dgl") is None else "other"


def describe() -> Dict[str, object]:
    import importlib.metadata as md

    import torch

    from ..graph.dgl_util import require_dgl
    from ..models.gm_mlic.model import select_backend
    versions: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "numpy", "dgl"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    pins = pinned_versions()
    try:
        require_dgl()
        dgl = {"available": True, "why_not": ""}
    except ImportError as e:
        dgl = {"available": False, "why_not": str(e)}
    backends: Dict[str, Dict[str, str]] = {}
    for dev in ("cpu", "cuda"):
        if dev == "cuda" and not torch.cuda.is_available():
            backends[dev] = {"backend": None, "why": "torch sees no CUDA device"}
            continue
        backend, why = select_backend("auto", torch.device(dev))
        backends[dev] = {"backend": backend, "why": why}
    return {"versions": versions, "stack": stack_name(versions, pins), "pins": pins, "dgl": dgl,
            "gm_mlic_auto_backend": backends}


OTHER_STACK = {
    "pinned": "for the current torch without DGL, in a fresh venv: pip install torch torchvision "
              "&& pip install -e '.[test]'",
    "current": "for the pinned DGL stack (Python 3.10-3.12), in a fresh venv: "
               "pip install -c constraints.txt -e '.[dgl,test]'",
}


def render(d: Dict[str, object]) -> str:
    v = d["versions"]
    lines = [f"{k:<12} {v[k] or 'not installed'}" for k in ("python", "torch", "torchvision", "numpy")]
    pins = d["pins"]
    pinned = (", ".join(f"{k} {x}" for k, x in sorted(pins.items())) if pins else
              "none for this Python" if pins == {} else "unknown (no constraints.txt here)")
    lines.append(f"{'stack':<12} {d['stack']} (pinned for this Python: {pinned})")
    dgl = d["dgl"]
    lines.append(f"{'dgl':<12} " + (f"{v['dgl']} (imports)" if dgl["available"] else
                                     f"unavailable: {dgl['why_not']}"))
    for dev, b in d["gm_mlic_auto_backend"].items():
        why = "DGL does not import" if b["backend"] and not dgl["available"] else b["why"]
        lines.append(f"{'gm_mlic ' + dev:<12} backend: auto -> {b['backend'] or '-'}"
                     + (f" ({why})" if why else ""))
    if d["stack"] in OTHER_STACK:
        lines.append(f"{'other stack':<12} {OTHER_STACK[d['stack']]}")
    return "\n".join(lines)


def cmd_env(args) -> int:
    d = describe()
    print(json.dumps(d, indent=1) if args.json else render(d))
    return 0
