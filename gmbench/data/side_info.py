"""Training-split side information (``DataInfo``), cached as .npy + .json.

Cache layout: ``<cache_dir>/side_info/<key>/`` with label_ratios.npy, class_counts.npy,
cooccurrence.npy, word_embeddings.npy and meta.json. The folder is written under a temp
name and renamed into place, so a reader sees either no entry or a whole one. The key
hashes the split's image ids, targets, class names, embedding dim and the GloVe file's
path, size and mtime, so a change to any of them makes a new entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from gmbench.data.base import DataConfig, DataInfo, LabelSet
from gmbench.data.glove import glove_embeddings, random_embeddings
from gmbench.utils.io import atomic_numpy_save, atomic_write_json

CACHE_VERSION = 1
_ARRAYS = ("label_ratios", "class_counts", "cooccurrence", "word_embeddings")


def label_statistics(targets: np.ndarray) -> Dict[str, np.ndarray]:
    """From int8 [N, C] targets (1 / 0 / -1; -1 counts as absent):

    class_counts int64 [C], cooccurrence int64 [C, C] (diagonal = class_counts),
    label_ratios float64 [C] = class_counts / N (zeros when N = 0).
    """
    pos = (np.asarray(targets) == 1).astype(np.int64)
    counts = pos.sum(axis=0)
    co = pos.T @ pos
    n = pos.shape[0]
    ratios = counts / n if n else np.zeros(pos.shape[1], dtype=np.float64)
    return {"class_counts": counts, "cooccurrence": co, "label_ratios": ratios.astype(np.float64)}


def _glove_identity(glove: Optional[str]) -> Optional[dict]:
    if not glove:
        return None
    p = Path(glove).expanduser().resolve()
    if not p.is_file():
        raise FileNotFoundError(f"data.glove={glove!r}: no such file; give the path of "
                                f"glove.6B.300d.txt or glove.840B.300d.txt, or unset it")
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_key(labels: LabelSet, cfg: DataConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "classes": list(labels.class_names),
                         "dim": cfg.embedding_dim, "glove": _glove_identity(cfg.glove)},
                        sort_keys=True).encode("utf-8"))
    h.update("\n".join(labels.image_ids).encode("utf-8"))
    h.update(np.ascontiguousarray(labels.targets, dtype=np.int8).tobytes())
    return h.hexdigest()[:24]


def _load_entry(entry: Path, n_classes: int) -> Optional[DataInfo]:
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        arrays = {a: np.load(entry / f"{a}.npy", allow_pickle=False) for a in _ARRAYS}
    except (OSError, ValueError):
        return None  # damaged entry: recompute and replace
    if (meta.get("version") != CACHE_VERSION or len(meta.get("class_names", [])) != n_classes
            or arrays["cooccurrence"].shape != (n_classes, n_classes)
            or arrays["word_embeddings"].shape[0] != n_classes):
        return None
    return DataInfo(class_names=meta["class_names"], label_ratios=arrays["label_ratios"],
                    class_counts=arrays["class_counts"], cooccurrence=arrays["cooccurrence"],
                    word_embeddings=arrays["word_embeddings"],
                    embedding_source=meta["embedding_source"], n_train=int(meta["n_train"]),
                    extra=dict(meta.get("extra", {})))


def _write_entry(entry: Path, info: DataInfo) -> None:
    """Write every file into a temp folder, then rename it to ``entry`` in one step."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}.", dir=str(entry.parent)))
    try:
        for a in _ARRAYS:
            atomic_numpy_save(tmp / f"{a}.npy", getattr(info, a))
        extra = {k: v for k, v in info.extra.items() if k not in ("cache_path", "cache_hit")}
        atomic_write_json(tmp / "meta.json", {
            "version": CACHE_VERSION, "class_names": list(info.class_names),
            "embedding_source": info.embedding_source, "n_train": info.n_train,
            "extra": extra})
        if entry.exists():  # a damaged or stale entry: move it aside, then drop it
            stale = entry.parent / f".stale-{entry.name}-{os.getpid()}"
            os.replace(entry, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, entry)
        except OSError:
            if not (entry / "meta.json").is_file():  # lost a race only if the winner is whole
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compute_data_info(train_labels: LabelSet, cfg: DataConfig) -> DataInfo:
    """DataInfo from scratch (no cache). Embeddings: GloVe when cfg.glove, else seeded random."""
    stats = label_statistics(train_labels.targets)
    names = list(train_labels.class_names)
    extra: Dict[str, object] = {}
    if cfg.glove:
        emb, report = glove_embeddings(names, Path(cfg.glove), cfg.embedding_dim)
        source = f"glove:{Path(cfg.glove).expanduser().resolve()}"
        extra.update(report)
    else:
        emb, seed = random_embeddings(names, cfg.embedding_dim)
        source = f"random:seed={seed}"
        extra["missing_words"] = []
    return DataInfo(class_names=names, label_ratios=stats["label_ratios"],
                    class_counts=stats["class_counts"], cooccurrence=stats["cooccurrence"],
                    word_embeddings=emb, embedding_source=source,
                    n_train=len(train_labels), extra=extra)


def build_data_info(train_labels: LabelSet, cfg: DataConfig, cache_dir: Path) -> DataInfo:
    """Side information of the training split, from cache when the key matches.

    extra holds missing_words (GloVe words not found), classes_without_vector, words
    (class → GloVe words), cache_path and cache_hit.
    """
    entry = Path(cache_dir).expanduser() / "side_info" / cache_key(train_labels, cfg)
    info = _load_entry(entry, train_labels.num_classes)
    hit = info is not None
    if info is None:
        info = compute_data_info(train_labels, cfg)
        _write_entry(entry, info)
    elif info.extra.get("missing_words"):
        warnings.warn(f"label word(s) not in the GloVe file (cached report): "
                      f"{', '.join(info.extra['missing_words'])}", stacklevel=2)
    info.extra["cache_path"] = str(entry)
    info.extra["cache_hit"] = hit
    return info
