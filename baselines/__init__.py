"""Baseline methods. Every module in this folder is imported, so a new file that
calls ``register_method`` is a new method (see docs/adding_a_method.md)."""
import importlib
import pkgutil

for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
