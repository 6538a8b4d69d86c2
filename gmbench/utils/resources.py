"""Where the shipped YAML lives: suites, method/dataset configs and published tables.

They are package data under ``gmbench/_data/`` and are read through ``importlib.resources``,
so an installed wheel finds them wherever it lives. In the repository ``gmbench/_data/configs``
and ``gmbench/_data/reference`` are symlinks to the top-level ``configs/`` and
``results/reference/`` (the sources that stay where they are), so a source checkout, an
editable install and a wheel all take the same path here. Why symlinks and not a build step
that copies: one lookup for every install kind, nothing to fall back on; setuptools copies
the files they point at into the wheel (pyproject.toml's package-data).
"""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def _packaged(name: str) -> Path:
    where = files("gmbench") / "_data" / name
    if not isinstance(where, Path):  # e.g. a zipped install: the readers need real files
        raise RuntimeError(f"gmbench's package data ({where}) is not on the file system; "
                           f"install gmbench unzipped (pip install does)")
    # resolve(): in a checkout, the top-level folder, so paths in messages read configs/...
    return where.resolve()


def config_dir() -> Path:
    """Suites, methods, datasets and defaults.yaml: ``$GMBENCH_CONFIGS`` when set, else the
    shipped ``configs/``."""
    env = os.environ.get("GMBENCH_CONFIGS")
    return Path(env) if env else _packaged("configs")


def reference_dir() -> Path:
    """Published tables (``*.yaml``): ``$GMBENCH_REFERENCE`` when set, else the shipped
    ``results/reference/``."""
    env = os.environ.get("GMBENCH_REFERENCE")
    return Path(env) if env else _packaged("reference")
