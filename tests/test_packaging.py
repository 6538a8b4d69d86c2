"""Packaging: every import is declared, and the install markers pick the right stack.

The declared-imports check reads the sources (ast), so it fails on a stack where the missing
package happens to be installed by something else (as DGL brought psutil on the pinned one).
"""
from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")   # Python >= 3.11; CI runs 3.11
from packaging.requirements import Requirement  # noqa: E402  (pytest depends on packaging)
from packaging.utils import canonicalize_name  # noqa: E402

LOCAL = {"gmbench", "baselines", "tests", "conftest"} | {p.stem for p in (REPO / "tests").glob("*.py")}
# Import name -> distribution, for the declared packages whose names differ (checked below
# against importlib.metadata where the package is installed).
DIST_OF = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn"}


def _project():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _names(reqs):
    return {canonicalize_name(Requirement(r).name) for r in reqs}


def imports(path: Path):
    """(unconditional, guarded) top-level module names imported by ``path``. Unconditional:
    at module level outside try; guarded: inside a function or try, or importorskip("x")."""
    tree = ast.parse(path.read_text(), str(path))
    plain, guarded = set(), set()

    def visit(node, is_guarded):
        for child in ast.iter_child_nodes(node):
            g = is_guarded or isinstance(child, (ast.Try, ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                (guarded if g else plain).update(a.name.split(".")[0] for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                (guarded if g else plain).add(child.module.split(".")[0])
            elif (isinstance(child, ast.Call) and getattr(child.func, "attr", "") == "importorskip"
                  and child.args and isinstance(child.args[0], ast.Constant)):
                guarded.add(child.args[0].value.split(".")[0])
            visit(child, g)

    visit(tree, False)
    third = lambda names: {n for n in names if n not in sys.stdlib_module_names and n not in LOCAL}  # noqa: E731
    return third(plain), third(guarded)


def undeclared(paths, allowed_plain, allowed_guarded):
    """Modules imported by ``paths`` whose distribution is not in the allowed sets."""
    missing = []
    for path in paths:
        plain, guarded = imports(path)
        for mods, allowed in ((plain, allowed_plain), (guarded, allowed_guarded)):
            for mod in sorted(mods):
                if canonicalize_name(DIST_OF.get(mod, mod)) not in allowed:
                    missing.append(f"{path.relative_to(REPO)}: {mod}")
    return missing


def test_every_test_import_is_declared_in_the_test_extra_or_the_dependencies():
    proj = _project()
    core = _names(proj["dependencies"])
    extras = proj["optional-dependencies"]
    test = core | _names(extras["test"])
    anywhere = test | set().union(*(_names(v) for v in extras.values()))
    assert undeclared(sorted((REPO / "tests").glob("*.py")), test, anywhere) == []


def test_every_package_import_is_a_core_dependency():
    """gmbench/baselines import only core dependencies at module level (DGL and matplotlib
    are imported lazily, inside functions)."""
    proj = _project()
    core = _names(proj["dependencies"])
    anywhere = core | set().union(*(_names(v) for v in proj["optional-dependencies"].values()))
    paths = sorted(REPO.glob("gmbench/**/*.py")) + sorted(REPO.glob("baselines/**/*.py"))
    assert undeclared(paths, core, anywhere) == []


def test_the_import_scan_finds_an_undeclared_module(tmp_path):
    """The check can fail: a module-level psutil import with psutil left undeclared."""
    f = REPO / "tests" / "test_distributed.py"
    assert "psutil" in imports(f)[0]
    assert undeclared([f], {"pytest", "torch", "pyyaml"}, set()) == ["tests/test_distributed.py: psutil"]


def test_import_name_aliases_match_installed_metadata():
    import importlib.metadata as md
    dists = md.packages_distributions()
    for mod, dist in DIST_OF.items():
        if mod in dists:
            assert canonicalize_name(dist) in {canonicalize_name(d) for d in dists[mod]}, mod


# --------------------------------------------------------------------- install markers
def _guard():
    spec = importlib.util.spec_from_file_location("check_wheels", REPO / ".ci" / "check_wheels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("py,stack", [("3.10", "pinned"), ("3.11", "pinned"), ("3.12", "pinned"),
                                      ("3.13", "current"), ("3.14", "current")])
def test_markers_select_the_pinned_dgl_stack_up_to_312_and_the_current_one_after(py, stack):
    g = _guard()
    reqs = {canonicalize_name(r.name): r for r in g.selected(g.project_lines()[1], py)}
    pins = {canonicalize_name(r.name): g.pin_of(r) for r in g.selected(g.constraint_lines(), py)}
    if stack == "pinned":
        assert "dgl" in reqs and pins["dgl"] == "2.1.0"
        assert pins["torch"] == "2.2.1" and pins["torchvision"] == "0.17.1"
        assert pins["numpy"] == "1.26.4"
        # one pin per package, and each satisfies every requirement that names it
        assert len(pins) == len(g.selected(g.constraint_lines(), py))
        for name, r in reqs.items():
            if name in pins:
                assert r.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    else:
        assert "dgl" not in reqs and "torchdata" not in reqs and pins == {}
        assert {"torch", "torchvision", "psutil"} <= set(reqs)


def test_wheel_filter_matches_pip_rules_on_hand_made_index_entries():
    g = _guard()
    plat = next(iter(__import__("packaging.tags", fromlist=["x"]).platform_tags()))
    files = [
        {"filename": f"a-1.0-cp312-cp312-{plat}.whl"},                  # 3.12 only
        {"filename": f"a-2.0-cp313-cp313-{plat}.whl"},                  # 3.13 only
        {"filename": "a-3.0-py3-none-any.whl", "requires-python": ">=3.13"},
        {"filename": "a-4.0-py3-none-any.whl", "yanked": True},         # never
        {"filename": "a-5.0-cp313-cp313-win_amd64.whl"},                # other platform
        {"filename": "a-6.0.tar.gz"},                                   # not a wheel
        {"filename": f"a-7.0-cp311-abi3-{plat}.whl"},                   # abi3: 3.11 and later
    ]
    v = lambda py: [str(x) for x in g.wheel_versions(files, py)]  # noqa: E731
    assert v("3.10") == []
    assert v("3.12") == ["7.0", "1.0"]
    assert v("3.13") == ["7.0", "3.0", "2.0"]
