"""``gmbench env``: versions, stack name, DGL availability, GM-MLIC's auto backend."""
from __future__ import annotations

import importlib.metadata as md
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import subprocess_env
from gmbench.cli import env as E
from gmbench.cli import main

try:
    import dgl  # noqa: F401
    HAS_DGL = True
except Exception:  # noqa: BLE001  (DGL fails with ImportError, OSError or pydantic errors)
    HAS_DGL = False


def _version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def test_env_json_matches_the_interpreter_and_what_imports(capsys):
    assert main(["env", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["versions"] == {"python": platform.python_version(), "torch": _version("torch"),
                             "torchvision": _version("torchvision"), "numpy": _version("numpy"),
                             "dgl": _version("dgl")}
    assert d["dgl"]["available"] is HAS_DGL
    assert (d["dgl"]["why_not"] == "") is HAS_DGL
    cpu = d["gm_mlic_auto_backend"]["cpu"]
    assert cpu["backend"] == ("dgl" if HAS_DGL else "dense")
    cuda = d["gm_mlic_auto_backend"]["cuda"]
    if not torch.cuda.is_available():
        assert cuda["backend"] is None and "no CUDA" in cuda["why"]
    else:
        assert cuda["backend"] in ("dgl", "dense")
    # The stack, from the pins written in constraints.txt (read here apart from E's parser)
    base = torch.__version__.split("+")[0]
    if HAS_DGL and base == "2.2.1" and sys.version_info < (3, 13):
        assert d["stack"] == "pinned"
    elif not HAS_DGL:
        assert d["stack"] == "current"


def test_the_auto_backend_is_the_one_the_model_picks():
    """env reports what GMMLIC.resolve_backend does, not a copy of its rule."""
    from gmbench.models.gm_mlic.model import GMMLIC, select_backend
    assert GMMLIC.resolve_backend.__code__.co_names.count("select_backend") == 1
    assert select_backend("dense", torch.device("cpu")) == ("dense", "")
    if HAS_DGL:
        assert select_backend("auto", torch.device("cpu")) == ("dgl", "")
    else:
        backend, why = select_backend("auto", torch.device("cpu"))
        assert backend == "dense" and "DGL" in why
        with pytest.raises(ImportError, match="model.backend=dgl cannot run"):
            select_backend("dgl", torch.device("cpu"))


@pytest.mark.parametrize("installed,pins,stack", [
    ({"torch": "2.2.1+cu121", "torchvision": "0.17.1", "dgl": "2.1.0"},
     {"torch": "2.2.1", "torchvision": "0.17.1", "dgl": "2.1.0"}, "pinned"),
    ({"torch": "2.14.1", "torchvision": "0.29.1", "dgl": None},
     {"torch": "2.2.1", "torchvision": "0.17.1", "dgl": "2.1.0"}, "current"),
    ({"torch": "2.14.1", "torchvision": "0.29.1", "dgl": None}, {}, "current"),   # Python 3.13
    ({"torch": "2.4.0", "torchvision": "0.19.0", "dgl": "2.4.0+cu124"},
     {"torch": "2.2.1", "torchvision": "0.17.1", "dgl": "2.1.0"}, "other"),
    ({"torch": "2.2.1", "torchvision": "0.17.1", "dgl": "2.1.0"}, None, "other"),  # no checkout
])
def test_stack_name(installed, pins, stack):
    assert E.stack_name(installed, pins) == stack


def test_pins_follow_the_markers(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text('# pins\ntorch==2.2.1 ; python_version < "3.13"\n'
                 'torch==9.9 ; python_version >= "3.13"\ndgl==2.1.0\nnumpy==1.26.4\n')
    want = {"torch": "2.2.1" if sys.version_info < (3, 13) else "9.9", "dgl": "2.1.0"}
    assert E.pinned_versions(f) == want
    assert E.pinned_versions(tmp_path / "missing.txt") is None


def test_env_text_via_the_module_entry_point():
    res = subprocess.run([sys.executable, "-m", "gmbench", "env"], capture_output=True, text=True,
                         env=subprocess_env(), cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"torch        {_version('torch')}" in out
    assert "gm_mlic cpu  backend: auto -> " + ("dgl" if HAS_DGL else "dense") in out
    assert ("dgl          unavailable" in out) is not HAS_DGL
