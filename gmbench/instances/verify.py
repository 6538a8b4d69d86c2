"""Checks of a finished instance cache before anything reads it.

Two levels:

* **quick** – the manifest is consistent (shards cover images ``[0, N)`` once, in
  order; instance counts add up; the id list matches its digest) and every array
  file of every shard exists, has the dtype and shape the manifest implies in its
  ``.npy`` header, and is exactly as long as that header says (and as the byte
  count recorded at extraction, where the manifest has one).  One ``stat`` and one
  small read per file: milliseconds for a COCO-sized cache.  It catches missing,
  truncated, padded and swapped files, not changed bytes of the right length.
* **full** – the sha256 of every file against the manifest, i.e. one read of the
  whole cache (see docs/performance.md for the rate).

**Stamp.**  After a successful full check, ``DIR/verified.json`` records the
manifest's digest and, per file, (size, mtime_ns, ctime_ns, inode) as they were
*before* hashing.  ``open_cache`` (level ``auto``) runs the quick check, then the
full one unless the stamp still matches, so a cache is hashed once per content,
not once per run.  Any write to a file changes its ctime, which no ``touch``
can set back, so a modified file is re-hashed; what the stamp cannot see is
damage below the file system (bit rot), which ``gmbench extract --verify full``
finds because it always re-hashes.  Copying the cache elsewhere (new inodes)
costs one more full check.

Manifests written before byte counts were recorded (same format, every file's
sha256 was always there) are accepted: the header-derived size still catches
truncation, and the first open hashes them in full.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..utils import signals
from ..utils.io import atomic_write_json
from ..errors import CacheError
from ..utils.io import sha256_file
from . import layout as L

STAMP = "verified.json"
LEVELS = ("quick", "full", "auto")


def expected_layout(shard: dict, feat_dim: int) -> Dict[str, tuple]:
    """{array name: (dtype, shape)} that shard entry ``shard`` of a manifest implies."""
    k, n = int(shard["n_instances"]), int(shard["stop"]) - int(shard["start"])
    return {"feat": (np.float16, (k, feat_dim)), "boxes_px": (np.float32, (k, 4)),
            "boxes": (np.float32, (k, 4)), "labels": (np.int32, (k,)),
            "scores": (np.float32, (k,)), "offsets": (np.int64, (n + 1,)),
            "sizes": (np.int32, (n, 2)), "geometry": (np.float32, (n, 6))}


def _header(path: Path):
    """(dtype, shape, offset of the data) from a ``.npy`` header, or a problem string."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(f)
            return dtype, shape, f.tell()
    except (OSError, ValueError) as e:
        return f"has no readable .npy header ({e})"


def shard_file_problems(shard_dir: Path, s: int, record: dict, level: str,
                        layout: Optional[Dict[str, tuple]] = None) -> List[str]:
    """What is wrong with the array files of shard ``s`` (empty: nothing found).

    ``record`` is the shard's manifest entry or commit record (``files``: sha256 per
    array, ``bytes``: size per array where recorded); ``layout`` (expected dtype and
    shape per array) adds the header checks; ``level`` 'full' also hashes.
    """
    out = []
    sums, sizes = record.get("files") or {}, record.get("bytes") or {}
    for name in L.arrays_of(record):
        path = L.array_path(shard_dir, s, name)
        try:
            size = path.stat().st_size
        except OSError:
            out.append(f"{path.name} is missing")
            continue
        if name in sizes and size != sizes[name]:
            out.append(f"{path.name} has {size} bytes, {sizes[name]} were written")
            continue
        if layout is not None:
            head = _header(path)
            if isinstance(head, str):
                out.append(f"{path.name} {head}")
                continue
            dtype, shape, offset = head
            want_dtype, want_shape = layout[name]
            if dtype != np.dtype(want_dtype) or tuple(shape) != want_shape:
                out.append(f"{path.name} holds {dtype}{list(shape)}, the manifest implies "
                           f"{np.dtype(want_dtype)}{list(want_shape)}")
                continue
            if size != offset + dtype.itemsize * int(np.prod(shape)):
                out.append(f"{path.name} has {size} bytes, its header implies "
                           f"{offset + dtype.itemsize * int(np.prod(shape))}")
                continue
        if level == "full" and sha256_file(path) != sums.get(name):
            out.append(f"{path.name} does not match its sha256 checksum")
    return out


def manifest_problem(manifest: dict) -> Optional[str]:
    """Why the manifest contradicts itself (None: consistent)."""
    try:
        shards, ids = manifest["shards"], manifest["image_ids"]
        pos = 0
        for j, sh in enumerate(shards):
            if sh["shard"] != j or sh["start"] != pos or sh["stop"] < sh["start"]:
                return f"shard entry {j} does not continue at image {pos}"
            pos = sh["stop"]
        if pos != len(ids) or len(ids) != manifest["n_images"]:
            return (f"its shards cover {pos} images, it lists {len(ids)} ids and "
                    f"{manifest['n_images']} images")
        if sum(sh["n_instances"] for sh in shards) != manifest["n_instances"]:
            return "its shards' instance counts do not add up to n_instances"
        if L.ids_digest(ids) != manifest["ids_sha256"]:
            return "its image id list does not match ids_sha256"
        int(manifest["feat_dim"])
    except (KeyError, TypeError, ValueError) as e:
        return f"it is malformed ({type(e).__name__}: {e})"
    return None


def check_shards(root: Path, manifest: dict, level: str,
                 which: Optional[Sequence[int]] = None) -> Dict[int, List[str]]:
    """{shard: problems} of the shards ``which`` (default all) at ``level`` (quick or full)."""
    shard_dir, feat_dim = root / "shards", int(manifest["feat_dim"])
    bad = {}
    for j in (range(len(manifest["shards"])) if which is None else which):
        signals.check(f"verification of {root}")
        sh = manifest["shards"][j]
        found = shard_file_problems(shard_dir, j, sh, level, expected_layout(sh, feat_dim))
        if found:
            bad[j] = found
    return bad


def _key(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def file_keys(root: Path, manifest: dict) -> Dict[str, list]:
    """{file relative to ``root``: its stat key}; missing files are left out."""
    out = {}
    for sh in manifest["shards"]:
        for name in L.arrays_of(sh):
            path = L.array_path(root / "shards", sh["shard"], name)
            try:
                out[str(path.relative_to(root))] = _key(path)
            except OSError:
                pass
    return out


def manifest_digest(root: Path) -> str:
    return hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()


def stamp_matches(root: Path, manifest: dict) -> bool:
    """True when ``verified.json`` vouches for exactly the files there now."""
    try:
        stamp = json.loads((root / STAMP).read_text(encoding="utf-8"))
        return (stamp.get("manifest_sha256") == manifest_digest(root)
                and stamp.get("files") == file_keys(root, manifest))
    except (OSError, ValueError, AttributeError):
        return False


def write_stamp(root: Path, digest: str, keys: Dict[str, list]) -> None:
    """Record a passed full check; a read-only cache just stays unstamped."""
    try:
        atomic_write_json(root / STAMP, {"manifest_sha256": digest, "files": keys,
                                         "verified_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    except OSError as e:
        warnings.warn(f"cannot write {root / STAMP} ({e}); every open of this read-only "
                      f"cache will hash it in full", stacklevel=2)


def remove_stamp(root: Path) -> None:
    (root / STAMP).unlink(missing_ok=True)


def fix_hint(root: Path, manifest: dict) -> str:
    """How to re-extract the cache in ``root``: the command that made it."""
    cmd = (f"python -m gmbench extract --dataset {manifest.get('dataset')} --split "
           f"{manifest.get('split')} --source {manifest.get('source')} --top-m "
           f"{manifest.get('top_m')} --out {root}")
    return (f"rerun the command that made it (`{cmd}` with its other options as before; it "
            f"re-verifies the cache and re-extracts only the damaged shards), or delete {root} "
            f"and extract it anew")


def damage_report(root: Path, manifest: dict, bad: Dict[int, List[str]], level: str) -> str:
    items = [p for j in sorted(bad) for p in bad[j]]
    more = f" and {len(items) - 5} more" if len(items) > 5 else ""
    return (f"instance cache {root} is damaged ({level} check): "
            f"{'; '.join(f'shards/{p}' for p in items[:5])}{more}; {fix_hint(root, manifest)}")


def verify_cache(root: Path, manifest: dict, level: str = "auto") -> str:
    """Check the finished cache in ``root`` at ``level``; raise CacheError on damage.

    Returns what was done: 'quick', 'full', or 'stamp' (auto: quick, and the stamp
    still vouched for the files, so nothing was hashed).
    """
    if level not in LEVELS:
        raise ValueError(f"verify level must be one of {', '.join(LEVELS)}, got {level!r}")
    problem = manifest_problem(manifest)
    if problem:
        raise CacheError(f"{root / 'manifest.json'} is inconsistent: {problem}; "
                           f"{fix_hint(root, manifest)}")
    bad = check_shards(root, manifest, "quick")
    if bad:
        raise CacheError(damage_report(root, manifest, bad, "quick"))
    if level == "quick" or (level == "auto" and stamp_matches(root, manifest)):
        return "quick" if level == "quick" else "stamp"
    digest, keys = manifest_digest(root), file_keys(root, manifest)  # before hashing
    bad = check_shards(root, manifest, "full")
    if bad:
        remove_stamp(root)
        raise CacheError(damage_report(root, manifest, bad, "full"))
    write_stamp(root, digest, keys)
    return "full"
