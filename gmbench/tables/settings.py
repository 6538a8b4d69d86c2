"""The settings that can change a result, read from the records' resolved ``config``.

A table says which of them differ between its rows (:func:`differing`), and the snapshot
comparison compares only runs whose result settings are equal. Methods' own ``model.*``
blocks are left out (the method column already says they differ), and so are settings
that cannot change a number: paths, devices, worker and thread counts, logging,
checkpointing (``IGNORED``).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping

IGNORED_PREFIXES = ("model.", "seed", "device", "data.root", "data.cache_dir", "data.num_workers",
                    "data.glove", "train.num_threads", "train.log_every", "train.ckpt_every_steps",
                    "train.keep_last", "train.keep_final_weights", "train.tensorboard",
                    "train.compile", "train.channels_last", "train.max_bad_steps",
                    "eval.batch_size", "detector.")


def flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    """Nested dict → {dotted key: leaf value}."""
    if not isinstance(d, Mapping):
        return {prefix: d}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def result_settings(config: Mapping) -> Dict[str, Any]:
    """{dotted key: value} of a record's config, without the ``IGNORED_PREFIXES`` keys."""
    return {k: v for k, v in flatten(config or {}).items()
            if not any(k == p or k.startswith(p if p.endswith(".") else p + ".")
                       for p in IGNORED_PREFIXES)}


def differing(configs: Mapping[str, Mapping], missing_differs: bool = True
              ) -> Dict[str, Dict[str, Any]]:
    """{key: {label: value}} for the result settings whose value is not the same for every
    label. A key one label lacks counts as differing ('unset') unless ``missing_differs`` is
    False (configs written by another gmbench version, which may lack newer keys)."""
    flat = {label: result_settings(c) for label, c in configs.items()}
    keys = sorted(set().union(*flat.values())) if flat else []
    if not missing_differs:
        keys = [k for k in keys if all(k in f for f in flat.values())]
    out = {}
    for k in keys:
        vals = {label: f.get(k, "unset") for label, f in flat.items()}
        if len({repr(v) for v in vals.values()}) > 1:
            out[k] = vals
    return out


def describe(diff: Dict[str, Dict[str, Any]], limit: int = 8) -> List[str]:
    """'optim.lr: A 0.1, B 0.01' per differing key (at most ``limit``, then a count)."""
    lines = []
    for k, vals in list(diff.items())[:limit]:
        groups: Dict[str, List[str]] = {}
        for label, v in vals.items():
            groups.setdefault(_short(v), []).append(label)
        lines.append(f"{k}: " + "; ".join(f"{v} ({', '.join(labels)})"
                                           for v, labels in groups.items()))
    if len(diff) > limit:
        lines.append(f"... and {len(diff) - limit} more")
    return lines


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def row_configs(records: Iterable[dict], key=lambda r: r.get("table_row") or r["row"]
                ) -> Dict[str, dict]:
    """{table row: the config of its newest record} (seeds of one row share their settings)."""
    out: Dict[str, dict] = {}
    for r in records:
        if isinstance(r.get("config"), dict):
            out[key(r)] = r["config"]
    return out
