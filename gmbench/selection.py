"""Choosing what a ``gmbench run`` runs: row filters, row- and method-scoped overrides,
and the per-row settings that differ (for ``--dry-run``).

    --rows 'ResNet*'                      rows whose label or method matches (glob; repeatable)
    --set train.epochs=2                  every row
    --set 'ResNet GMP:model.pool=avg'     rows whose label matches the glob before ':'
    --set csra.model.lam=0.3              rows of method (config) or model ``csra``

Scoped overrides are validated like the rest: a scope that matches no row is an error,
and each row's merged config is validated by ``runner.plan``.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Dict, List, Tuple

from . import config as C


def _matches(pattern: str, *names: str) -> bool:
    return any(fnmatchcase(n, pattern) or fnmatchcase(n.casefold(), pattern.casefold()) for n in names)


def select_rows(suite, patterns: List[str]):
    """A copy of ``suite`` with only the rows whose label or method matches a pattern."""
    if not patterns:
        return suite
    for p in patterns:
        if not any(_matches(p, r.label, r.method) for r in suite.rows):
            raise C.ConfigError(f"--rows {p!r} matches no row of suite {suite.name!r}; rows: "
                                + ", ".join(f"{r.label!r} ({r.method})" for r in suite.rows))
    rows = [r for r in suite.rows if any(_matches(p, r.label, r.method) for p in patterns)]
    return suite.model_copy(update={"rows": rows})


def _method_names(row) -> List[str]:
    """The row's method config name and the model it registers (e.g. resnet_gap → resnet)."""
    names = [row.method]
    try:
        model = C.load_yaml(C.named_yaml("methods", row.method)).get("model", {}).get("name")
    except C.ConfigError:
        model = None
    return names + ([model] if model else [])


def split_overrides(items: List[str], suite) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """``--set`` items → (overrides for every row, {row label: overrides of that row})."""
    top = set(C.RunConfig.model_fields)
    common: List[str] = []
    per_row: Dict[str, List[str]] = {r.label: [] for r in suite.rows}
    methods = {n for r in suite.rows for n in _method_names(r)}
    for item in items or []:
        key = item.split("=", 1)[0]
        if ":" in key:
            scope, rest = item.split(":", 1)
            hit = [r for r in suite.rows if _matches(scope.strip(), r.label)]
            if not hit:
                raise C.ConfigError(f"--set {item!r}: {scope!r} matches no row label of suite "
                                    f"{suite.name!r}; labels: {', '.join(repr(r.label) for r in suite.rows)}")
            for r in hit:
                per_row[r.label].append(rest)
            continue
        head = key.split(".", 1)[0].strip()
        if head in top or "." not in key:
            common.append(item)
            continue
        known = set(C.available("methods"))
        if head not in methods and head not in known:
            raise C.ConfigError(f"--set {item!r}: {head!r} is neither a config key ("
                                f"{', '.join(sorted(top))}) nor a method of this suite "
                                f"({', '.join(sorted(methods))})")
        hit = [r for r in suite.rows if head in _method_names(r)]
        if not hit:
            raise C.ConfigError(f"--set {item!r}: suite {suite.name!r} has no row of method {head!r}; "
                                f"its methods: {', '.join(sorted(methods))}")
        for r in hit:
            per_row[r.label].append(item.split(".", 1)[1])
    return C.parse_set(common), {k: C.parse_set(v) for k, v in per_row.items() if v}


def _flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differing_settings(runs) -> List[Dict[str, Any]]:
    """For each planned run, {dotted key: value} of its settings whose value is not the same
    in every run that has the key (keys of one method's own model block that no other run
    has are left out: the method already says they differ)."""
    flat = [_flatten(C.to_dict(r.cfg)) for r in runs]
    keys = sorted(set().union(*flat)) if flat else []
    diff = [k for k in keys if len({repr(f[k]) for f in flat if k in f}) > 1]
    return [{k: f[k] for k in diff if k in f} for f in flat]
