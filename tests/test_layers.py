"""The layers hold: `lint-imports` keeps pyproject.toml's contracts (the pipeline's layer order,
method files independent of each other, no cycles between sibling modules), and catches an
import up the layers made inside a function; no source file is over 450 lines."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 450


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    if not LINT.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_import_contracts_are_kept():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


@pytest.mark.parametrize("module, planted", [
    # an import up the layers, hidden in a function: metrics must never reach the runner
    ("gmbench/metrics/ap.py", "\n\ndef _planted():\n    from gmbench import runner  # noqa\n"),
    # one method file reaching into another
    ("baselines/csra.py", "\n\ndef _planted():\n    import baselines.resnet  # noqa\n"),
    # a cycle between siblings: the cache's layout importing the cache back
    ("gmbench/instances/layout.py", "\n\ndef _planted():\n    from . import cache  # noqa\n"),
])
def test_a_forbidden_import_breaks_the_contracts(tmp_path, module, planted):
    for name in ("gmbench", "baselines"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    assert _lint(tmp_path).returncode == 0  # the copy is clean ...
    with open(tmp_path / module, "a", encoding="utf-8") as f:
        f.write(planted)
    res = _lint(tmp_path)  # ... until the planted import
    assert res.returncode != 0 and "BROKEN" in res.stdout, res.stdout[-2000:]


def test_no_source_file_is_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in sorted([*ROOT.glob("gmbench/**/*.py"),
                                                         *ROOT.glob("baselines/**/*.py")])
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these files (DETR-style small files, at most {MAX_LINES} lines): {long}"
