"""The wheel ships every config and published table, and an installed copy finds them.

The wheel is built once per session from a copy of the source tree: a build in place leaves
build/, whose stale files a later wheel picks up (so removing a file, or the package-data
mechanism, would go unnoticed). CI goes further (.ci/run): it installs the wheel into a fresh
venv outside the repository and runs `gmbench list` and one demo row from another folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gmbench.utils import resources

REPO = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".cache", "runs", "checkpoints", "snapshots")


def shipped():
    """{name in the wheel: repository file} for every file the wheel must carry."""
    cfg, ref = REPO / "configs", REPO / "results" / "reference"
    out = {f"gmbench/_data/configs/{p.relative_to(cfg).as_posix()}": p for p in cfg.rglob("*.yaml")}
    out.update({f"gmbench/_data/reference/{p.name}": p for p in ref.glob("*.yaml")})
    return out


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=NOT_SOURCE)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # --no-build-isolation: offline and ~2 s; needs setuptools and wheel (the test extra has them)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                        "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, ("pip wheel failed (are setuptools and wheel installed? the test "
                               f"extra has them):\n{r.stderr}")
    (whl,) = (tmp / "dist").glob("gmbench-*.whl")
    return whl


def test_the_wheel_carries_every_config_and_reference_table_unchanged(wheel):
    want = shipped()
    assert any(n.startswith("gmbench/_data/configs/suites/") for n in want)
    with zipfile.ZipFile(wheel) as z:
        have = {n for n in z.namelist() if n.startswith("gmbench/_data/")}
        assert sorted(set(want) - have) == [], "missing from the wheel"
        assert sorted(have - set(want)) == [], "in the wheel, but no configs/ or reference file"
        changed = [n for n, p in want.items() if z.read(n) != p.read_bytes()]
    assert changed == []


def test_an_unpacked_wheel_finds_its_own_configs_from_another_folder(wheel, tmp_path):
    """...and records no commit of the repository its venv happens to live in."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    for git in (["init", "-q"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                                 "--allow-empty", "-m", "a project that holds the venv"]):
        subprocess.run(["git", "-C", str(tmp_path), *git], check=True, timeout=30)
    env = {k: v for k, v in os.environ.items() if k not in ("GMBENCH_CONFIGS", "GMBENCH_REFERENCE")}
    env["PYTHONPATH"] = str(site)
    code = ("import json; from gmbench.utils.resources import config_dir, reference_dir; "
            "from gmbench.utils.env import git_commit; "
            "print(json.dumps({'configs': str(config_dir()), 'reference': str(reference_dir()), "
            "'commit': git_commit(), "
            "'suites': sorted(p.stem for p in (config_dir() / 'suites').glob('*.yaml')), "
            "'tables': sorted(p.stem for p in reference_dir().glob('*.yaml'))}))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert Path(got["configs"]).is_relative_to(site.resolve())
    assert Path(got["reference"]).is_relative_to(site.resolve())
    assert got["suites"] == sorted(p.stem for p in (REPO / "configs" / "suites").glob("*.yaml"))
    assert got["tables"] == sorted(p.stem for p in (REPO / "results" / "reference").glob("*.yaml"))
    assert got["commit"] == "unknown"


def test_a_checkout_reads_the_top_level_folders_and_the_environment_overrides_them(monkeypatch,
                                                                                   tmp_path):
    monkeypatch.delenv("GMBENCH_CONFIGS", raising=False)
    monkeypatch.delenv("GMBENCH_REFERENCE", raising=False)
    assert resources.config_dir() == (REPO / "configs").resolve()
    assert resources.reference_dir() == (REPO / "results" / "reference").resolve()
    monkeypatch.setenv("GMBENCH_CONFIGS", str(tmp_path / "c"))
    monkeypatch.setenv("GMBENCH_REFERENCE", str(tmp_path / "r"))
    assert (resources.config_dir(), resources.reference_dir()) == (tmp_path / "c", tmp_path / "r")
