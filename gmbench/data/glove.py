"""Label word embeddings from a GloVe text file (streamed, never fully loaded).

Supports glove.6B.*d.txt ("word v1 ... vD") and glove.840B.300d.txt, whose tokens may
contain spaces ("at name@domain.com v1 ... vD"): the D numbers are always taken from the
right and the rest of the line is the token. A word2vec-style header line "N D" is skipped.

Class names map to GloVe words through ``CLASS_WORDS`` (joined VOC names) or, by default,
by splitting on spaces/underscores/hyphens; a class vector is the mean of its words'.
"""
from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

# Class names that are not plain (space-separated) English words → the words to average.
# VOC joins multi-word names; everything else is split on spaces/underscores/hyphens.
CLASS_WORDS: Dict[str, Tuple[str, ...]] = {
    "diningtable": ("dining", "table"),
    "pottedplant": ("potted", "plant"),
    "tvmonitor": ("tv", "monitor"),
    "aeroplane": ("aeroplane",),
    "motorbike": ("motorbike",),
}


def class_words(name: str) -> Tuple[str, ...]:
    """Lower-case GloVe words for one class name, e.g. 'fire hydrant' → ('fire', 'hydrant')."""
    key = name.strip().lower()
    if key in CLASS_WORDS:
        return CLASS_WORDS[key]
    words = tuple(w for w in re.split(r"[\s_\-/]+", key) if w)
    if not words:
        raise ValueError(f"class name {name!r} has no words to look up in GloVe")
    return words


def name_seed(class_names: Sequence[str]) -> int:
    """A deterministic 32-bit seed from the class names (same names → same seed)."""
    digest = hashlib.sha256("\n".join(class_names).encode("utf-8")).hexdigest()
    return int(digest[:8], 16)


def random_embeddings(class_names: Sequence[str], dim: int) -> Tuple[np.ndarray, int]:
    """float32 [C, dim] standard-normal rows scaled to unit L2 norm, seeded by the names."""
    seed = name_seed(class_names)
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((len(class_names), dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float32), seed


def _parse_vector(fields: List[bytes], dim: int, path: Path, lineno: int) -> np.ndarray:
    try:
        return np.asarray([float(x) for x in fields[-dim:]], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: the last {dim} fields are not all numbers; "
                         f"is data.embedding_dim={dim} right for this file?") from None


def read_glove_words(path: Path, words: Sequence[str], dim: int) -> Dict[str, np.ndarray]:
    """Stream ``path`` and return float64 [dim] vectors for the requested words that it has.

    Only lines whose first space-separated field is a wanted word are split fully, so a
    5 GB file costs one pass of cheap prefix checks; the pass stops once every word is
    found. The first occurrence of a token wins (840B has a few duplicates).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"GloVe file {path} does not exist; set data.glove to a "
                                f"glove.6B.300d.txt / glove.840B.300d.txt path, or leave it "
                                f"unset for seeded random embeddings")
    wanted = {w.encode("utf-8") for w in words}
    found: Dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip(b"\r\n")
            if lineno == 1:
                fields = line.split(b" ")
                if len(fields) == 2 and all(x.isdigit() for x in fields):
                    continue  # word2vec header "N D"
                n_num = len(fields) - 1
                if n_num < dim or (n_num > dim and _is_number(fields[-dim - 1])):
                    raise ValueError(f"{path}: the first line has {n_num} numbers after the "
                                     f"token but data.embedding_dim={dim}; set it to the "
                                     f"file's dimension")
            head = line.split(b" ", 1)[0]
            if head not in wanted:
                continue
            fields = line.rstrip(b" ").split(b" ")
            if len(fields) < dim + 1:
                raise ValueError(f"{path}:{lineno}: {len(fields) - 1} numbers, expected {dim}")
            token = b" ".join(fields[:-dim])
            if token not in wanted:
                continue  # e.g. token "new york" whose first word is wanted
            key = token.decode("utf-8")
            if key not in found:
                found[key] = _parse_vector(fields, dim, path, lineno)
                if len(found) == len(wanted):
                    break
    return found


def _is_number(b: bytes) -> bool:
    try:
        float(b)
        return True
    except ValueError:
        return False


def glove_embeddings(class_names: Sequence[str], path: Path, dim: int
                     ) -> Tuple[np.ndarray, Dict[str, object]]:
    """float32 [C, dim] class vectors (mean of word vectors) and a report dict.

    report: words (class → words), missing_words (not in the file), classes_without_vector
    (no word found: such a class gets a name-seeded random vector scaled to the mean norm
    of the found class vectors, so it neither vanishes nor dominates).
    """
    per_class = {c: class_words(c) for c in class_names}
    all_words = sorted({w for ws in per_class.values() for w in ws})
    vecs = read_glove_words(path, all_words, dim)
    missing = [w for w in all_words if w not in vecs]
    emb = np.zeros((len(class_names), dim), dtype=np.float64)
    empty: List[str] = []
    for i, c in enumerate(class_names):
        have = [vecs[w] for w in per_class[c] if w in vecs]
        if have:
            emb[i] = np.mean(have, axis=0)
        else:
            empty.append(c)
    if empty:
        done = [i for i, c in enumerate(class_names) if c not in empty]
        scale = float(np.linalg.norm(emb[done], axis=1).mean()) if done else 1.0
        rnd, _ = random_embeddings(empty, dim)
        for k, c in enumerate(empty):
            emb[list(class_names).index(c)] = rnd[k] * scale
    if missing:
        warnings.warn(f"{len(missing)} label word(s) not in {path}: {', '.join(missing)}"
                      + (f"; classes with no word vector (random): {', '.join(empty)}"
                         if empty else ""), stacklevel=2)
    report = {"words": {c: list(ws) for c, ws in per_class.items()},
              "missing_words": missing, "classes_without_vector": empty}
    return emb.astype(np.float32), report
