"""Per-image test predictions of a run: ``OUT/SUITE/preds/<run_id>.npz``.

One file per finished run, next to ``runs.jsonl``, written by the runner from the final
epoch's evaluation and kept when checkpoints are cleaned. It holds three arrays:

* ``image_ids``: fixed-width unicode [N] (never objects, so it loads with
  ``allow_pickle=False``);
* ``probs``: float32 [N, C] (COCO val: 40,137 × 80 × 4 B = 12.8 MB), the evaluated values:
  float16 rounds every score above 0.9995 to 1.0, and the ties it makes moved a confident
  demo row's mAP by 2.4 points (docs/tables.md);
* ``targets``: int8 [N, C], 1 present, 0 absent, -1 ignored (VOC difficult), as evaluated.

The record holds ``{"file": "preds/<run_id>.npz", "sha256": ...}``; :func:`read_predictions`
checks the digest before trusting a byte, so a tampered or truncated file is an error
naming it, never a silently different significance test.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Sequence

import numpy as np

from .utils.io import RecordsError, atomic_write_bytes

PREDS_DIR = "preds"
KEYS = ("image_ids", "probs", "targets")


class PredictionsError(RecordsError):
    """A predictions file that is missing, altered or malformed (the CLI exits 1)."""


@dataclass
class Predictions:
    """One run's test predictions: image_ids str [N], probs float32 [N, C], targets int8 [N, C]."""
    image_ids: np.ndarray
    probs: np.ndarray
    targets: np.ndarray


def _encode(image_ids: Sequence[Any], probs: np.ndarray, targets: np.ndarray) -> bytes:
    ids = np.asarray([str(i) for i in image_ids], dtype=str)
    if ids.size == 0:
        ids = ids.astype("<U1")
    p = np.asarray(probs, dtype=np.float32)
    t = np.asarray(targets, dtype=np.int8)
    if p.ndim != 2 or t.shape != p.shape or len(ids) != len(p):
        raise ValueError(f"predictions: need image_ids [N], probs [N, C] and targets [N, C]; "
                         f"got {ids.shape}, {p.shape}, {t.shape}")
    buf = io.BytesIO()
    np.savez(buf, image_ids=ids, probs=p, targets=t)
    return buf.getvalue()


def write_predictions(suite_dir: Path, run_id: str, image_ids: Sequence[Any], probs: np.ndarray,
                      targets: np.ndarray) -> Dict[str, str]:
    """Write ``suite_dir/preds/<run_id>.npz`` atomically; returns the record's entry
    ``{"file": relative path, "sha256": hex digest}``."""
    data = _encode(image_ids, probs, targets)
    rel = f"{PREDS_DIR}/{run_id}.npz"
    atomic_write_bytes(Path(suite_dir) / rel, data)
    return {"file": rel, "sha256": hashlib.sha256(data).hexdigest()}


def read_predictions(suite_dir: Path, entry: Dict[str, str]) -> Predictions:
    """Load and verify the file a record's ``predictions`` entry names (relative to the suite
    folder). Raises PredictionsError naming the file when it is missing, its sha256 differs
    from the record's, or it lacks an array."""
    if not isinstance(entry, dict) or not entry.get("file") or not entry.get("sha256"):
        raise PredictionsError(f"{suite_dir}: a record's predictions entry {entry!r} needs "
                               f"'file' and 'sha256'")
    rel = Path(entry["file"])
    if rel.is_absolute() or ".." in rel.parts:
        raise PredictionsError(f"{suite_dir}: predictions file {entry['file']!r} must be a "
                               f"path inside the suite folder")
    path = Path(suite_dir) / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PredictionsError(f"{path} is missing (the record names it); rerun that run, or "
                               f"restore the file") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise PredictionsError(f"{path}: sha256 {digest[:12]}… differs from the record's "
                               f"{entry['sha256'][:12]}…; the file was altered or truncated, "
                               f"rerun that run or restore the file")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in KEYS}
    except (KeyError, ValueError, OSError) as e:
        raise PredictionsError(f"{path}: not a gmbench predictions file ({e})") from None
    return Predictions(arrays["image_ids"], arrays["probs"], arrays["targets"])
