"""CI guard: the README's install has a wheel for every package it selects, per Python.

For each target Python X.Y this resolves, without installing or downloading anything, what
``pip install -c constraints.txt -e '.[dgl,test]'`` asks for there: the project's
requirements (core + the dgl and test extras) and the constraint lines, each kept where its
environment marker holds on X.Y. It then reads the index's file list for each package (one
small JSON page, shared by all targets) and checks that

- every selected constraint pin has a wheel for X.Y (the pinned stack on 3.10-3.12), and
- every selected requirement without a pin has some wheel for X.Y that satisfies it (the
  current stack on 3.13), and that every pin satisfies the requirements that name it.

"A wheel for X.Y" means what pip would install there: a CPython X.Y tag (or py3/abi3/none)
for this machine's platform, a Requires-Python that admits X.Y, not yanked.

Why not ``pip install --dry-run --python-version X.Y``: this index serves no separate wheel
metadata (PEP 658), so a dry run downloads every wheel it resolves (torch: 0.75-0.9 GB each).
What it leaves to the real installs: transitive requirements of unpinned packages, which the
current-stack run resolves on this machine's Python.

The index is pip's default one (what users get), not this machine's configured mirrors: a
mirror without Requires-Python data would offer a py3-none-any wheel to a Python the package
does not support. Usage: ``python .ci/check_wheels.py 3.10 3.12 3.13``; exit 1 when a wheel
is missing, naming it.
"""
from __future__ import annotations

import json
import os
import ssl
import sys
import tomllib
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from packaging import tags
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("dgl", "test")


def marker_env(py: str) -> Dict[str, str]:
    env = dict(default_environment())
    env.update(python_version=py, python_full_version=f"{py}.0", implementation_version=f"{py}.0",
               extra="")
    return env


def selected(lines: List[str], py: str) -> List[Requirement]:
    """The requirements among ``lines`` whose markers hold on Python ``py``."""
    env = marker_env(py)
    reqs = [Requirement(x) for x in lines]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def project_lines() -> Tuple[str, List[str]]:
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(proj["dependencies"])
    for extra in EXTRAS:
        lines += proj["optional-dependencies"][extra]
    return proj.get("requires-python", ""), lines


def constraint_lines() -> List[str]:
    out = []
    for raw in (ROOT / "constraints.txt").read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def pin_of(req: Requirement) -> Optional[str]:
    specs = list(req.specifier)
    return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


def index_files(name: str) -> List[dict]:
    """The files that pip's default index lists for ``name`` (PEP 691 JSON)."""
    from pip._internal.models.index import PyPI  # the default index, as pip names it
    ctx = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    req = urllib.request.Request(f"{PyPI.simple_url}/{name}/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=120, context=ctx) as r:
        return json.load(r)["files"]


def wheel_versions(files: List[dict], py: str) -> List[Version]:
    """Versions with a wheel that pip would install on CPython ``py`` on this platform:
    a compatible tag, a Requires-Python that admits ``py``, not yanked. Newest first."""
    major, minor = (int(x) for x in py.split("."))
    platforms = list(tags.platform_tags())
    ok_tags = set(tags.cpython_tags((major, minor), platforms=platforms)) | \
        set(tags.compatible_tags((major, minor), platforms=platforms))
    out = set()
    for f in files:
        if not f["filename"].endswith(".whl") or f.get("yanked"):
            continue
        try:
            _, version, _, wheel_tags = parse_wheel_filename(f["filename"])
        except (InvalidWheelFilename, InvalidVersion):
            continue  # legacy names such as 0.7.0d; never a pin of ours
        rp = f.get("requires-python")
        try:
            if rp and not SpecifierSet(rp).contains(f"{py}.0", prereleases=True):
                continue
        except InvalidSpecifier:
            pass  # pip ignores a malformed Requires-Python as well
        if ok_tags & set(wheel_tags):
            out.add(version)
    return sorted(out, reverse=True)


def check(py: str, files: Dict[str, List[dict]]) -> List[str]:
    """Problems for Python ``py`` (empty when every selected wheel exists)."""
    requires_python, lines = project_lines()
    if requires_python and not SpecifierSet(requires_python).contains(py + ".0"):
        return [f"Python {py}: pyproject.toml requires-python is {requires_python!r}"]
    reqs = selected(lines, py)
    pins = {canonicalize_name(r.name): r for r in selected(constraint_lines(), py)}
    wanted: Dict[str, SpecifierSet] = {n: r.specifier for n, r in pins.items()}
    problems = []
    for r in reqs:
        n = canonicalize_name(r.name)
        pin = pin_of(pins[n]) if n in pins else None
        if pin is not None and not r.specifier.contains(pin, prereleases=True):
            problems.append(f"Python {py}: constraints.txt pins {n}=={pin} but the project "
                            f"requires {r}")
        wanted.setdefault(n, r.specifier)
        if pin is None:
            wanted[n] = wanted[n] & r.specifier
    found = {n: wheel_versions(files[n], py) for n in wanted}
    for n, spec in sorted(wanted.items()):
        ok = [v for v in found[n] if spec.contains(v, prereleases=True)]
        if not ok:
            have = ", ".join(str(v) for v in found[n][:5]) or "none"
            problems.append(f"Python {py}: no wheel of {n}{spec} (wheels for {py}: {have}...)")
    return problems


def main(argv: List[str]) -> int:
    pys = argv or ["3.13"]
    names = set()
    for py in pys:
        names |= {canonicalize_name(r.name) for r in selected(project_lines()[1], py)}
        names |= {canonicalize_name(r.name) for r in selected(constraint_lines(), py)}
    with ThreadPoolExecutor(8) as pool:
        files = dict(zip(sorted(names), pool.map(index_files, sorted(names))))
    problems = []
    for py in pys:
        got = check(py, files)
        print(f"Python {py}: " + ("every selected wheel exists" if not got else
                                  f"{len(got)} missing"), flush=True)
        problems += got
    for p in problems:
        print("  " + p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
