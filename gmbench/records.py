"""Run records: identity, reading a results folder, superseding stale records.

A record is one JSON line of ``OUT/SUITE/runs.jsonl`` (written by the runner).
Its ``run_id`` hashes (suite, row label, seed, resolved config): two runs share an
id only if they would train the same model on the same data.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from .utils.io import RecordsError, append_jsonl, atomic_write_bytes, read_jsonl
from .utils.io import config_digest as config_hash


def run_id(suite: str, label: str, seed: int, resolved: Dict[str, Any]) -> str:
    """The identity of one run: checkpoints and the record are keyed by it."""
    return config_hash({"suite": suite, "row": label, "seed": seed, "config": resolved})


def record_run_id(rec: Dict[str, Any]) -> str:
    """A record's run id (recomputed for records written before run ids existed)."""
    return rec.get("run_id") or run_id(rec["suite"], rec["row"], rec["seed"], rec["config"])


_RECORD_KEYS = ("status", "suite", "row", "seed", "config")


def finished_records(path: Path) -> Dict[str, dict]:
    """run_id → record for every finished record of ``path``; a line that is not a
    record is a RecordsError naming the file and the line's position."""
    out = {}
    for n, rec in enumerate(read_jsonl(path), 1):
        missing = [k for k in _RECORD_KEYS if k not in rec]
        if missing:
            raise RecordsError(f"{path}: record {n} lacks {', '.join(missing)}; it is not a gmbench "
                               f"run record: remove that line (or move the file away)")
        if rec["status"] == "finished":
            out[record_run_id(rec)] = rec
    return out


def append_record(path: Path, record: Dict[str, Any]) -> bool:
    """Append a finished record unless ``path`` already holds a finished record of its
    run id (checked under the append lock: two holders of one run write it once)."""
    rid = record_run_id(record)

    def has_it(old: bytes) -> bool:
        for line in old.decode("utf-8", errors="replace").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and r.get("status") == "finished" and r.get("run_id") == rid:
                return True
        return False
    return append_jsonl(path, record, unless=has_it if record.get("status") == "finished" else None)


def finished_keys(path: Path) -> Dict[tuple, dict]:
    """(row label, seed) → finished record (the tables' view of a results folder)."""
    return {(r["row"], r["seed"]): r for r in finished_records(path).values()}


def config_changes(old: Dict[str, Any], new: Dict[str, Any], prefix: str = "") -> List[str]:
    """``key: old → new`` for every leaf that differs between two resolved configs."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b, key = old.get(k), new.get(k), f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, key + ".")
        elif a != b:
            out.append(f"{key}: {a!r} → {b!r}")
    return out


def stale_records(runs: List[Any], done: Dict[str, dict]) -> List[tuple]:
    """(planned run, finished record) pairs of the same row and seed but another run id."""
    by_key = {(r["row"], r["seed"]): r for r in done.values()}
    return [(r, by_key[r.key]) for r in runs if r.run_id not in done and r.key in by_key]


def replace_stale(suite_dir: Path, stale: List[tuple], log) -> None:
    """Move superseded records to runs.superseded.jsonl; runs.jsonl keeps the others."""
    gone = {record_run_id(rec) for _, rec in stale}
    path = suite_dir / "runs.jsonl"
    keep = []
    for rec in read_jsonl(path):
        if rec.get("status") == "finished" and record_run_id(rec) in gone:
            append_jsonl(suite_dir / "runs.superseded.jsonl", rec)
        else:
            keep.append(rec)
    atomic_write_bytes(path, b"".join(json.dumps(r).encode() + b"\n" for r in keep))
    log(f"moved {len(gone)} superseded record(s) to {suite_dir / 'runs.superseded.jsonl'}")
