"""On-disk instance cache: sharded flat arrays + per-image offsets, and its reader.

Layout of a cache directory ``DIR``::

    DIR/plan.json                   settings identity, written before any shard
    DIR/shards/shard-00000.json     commit record of shard 0 (written LAST)
    DIR/shards/shard-00000.<a>.npy  one file per array <a> (see ``ARRAYS``)
    DIR/manifest.json               written once every shard is committed
    DIR/verified.json               stamp of the last passed full check (``verify.py``)

Shard ``s`` holds images ``[s*S, min((s+1)*S, N))`` for shard size ``S``, so the
split into shards does not depend on how many processes extracted it.  Every
file is written atomically (temp file + rename, ``gmbench.utils.io``) and the
shard's JSON commit record, with a sha256 and byte count per file, comes last: a
shard without a valid record is redone on resume, never read.  The manifest
repeats those per-file sums and sizes; every open checks them (``verify.py``).

Per shard with ``n`` images and ``k`` instances in total:
    feat      float16 [k, D]   box-head (or RoIAlign) feature of each instance
    boxes_px  float32 [k, 4]   (x1, y1, x2, y2) in pixels of the original image
    boxes     float32 [k, 4]   the same divided by (w, h, w, h), in [0, 1]
    labels    int32   [k]      class id (detector's index; -1 = false box)
    scores    float32 [k]      confidence (descending within an image)
    offsets   int64   [n + 1]  image j's instances are rows offsets[j]:offsets[j+1]
    sizes     int32   [n, 2]   (width, height) of each image
    geometry  float32 [n, 6]   optional (views caches, ``views.py``): the entry's map from the
                               original image to the augmented view it was detected on
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import CacheError  # noqa: F401  (re-exported: raised here)
from ..utils.io import atomic_numpy_save, atomic_write_json, sha256_file
from .layout import (_PER_INSTANCE, ARRAYS, FORMAT, OPTIONAL, array_path,  # noqa: F401
                     ids_digest, settings_digest, shard_name, shard_ranges)

def pack_shard(results: List[dict], feat_dim: int) -> Dict[str, np.ndarray]:
    """Per-image results → the shard's flat arrays.

    Each result: boxes_px [k,4], feat [k,D], labels [k], scores [k], size (w, h).
    """
    counts = [len(r["boxes_px"]) for r in results]
    offsets = np.zeros(len(results) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    sizes = np.array([r["size"] for r in results], dtype=np.int32).reshape(-1, 2)

    def cat(key, shape, dt):
        parts = [np.asarray(r[key], dtype=dt).reshape(shape) for r in results]
        return np.concatenate(parts) if parts else np.zeros((0,) + shape[1:], dt)

    feat = cat("feat", (-1, feat_dim), np.float32)
    if not np.isfinite(feat).all():
        raise CacheError("instance features hold NaN/inf; the detector or backbone weights "
                         "are broken (check --weights)")
    if np.abs(feat).max(initial=0.0) > np.finfo(np.float16).max:
        raise CacheError(f"instance features reach {np.abs(feat).max():.3g}, beyond float16; "
                         f"these weights cannot be cached in fp16")
    boxes_px = cat("boxes_px", (-1, 4), np.float32)
    wh = np.repeat(sizes, counts, axis=0).astype(np.float32)
    scale = np.concatenate([wh, wh], axis=1) if len(wh) else np.zeros((0, 4), np.float32)
    boxes = np.clip(boxes_px / np.maximum(scale, 1.0), 0.0, 1.0) if len(wh) else scale
    out = {"feat": feat.astype(np.float16), "boxes_px": boxes_px, "boxes": boxes.astype(np.float32),
           "labels": cat("labels", (-1,), np.int32), "scores": cat("scores", (-1,), np.float32),
           "offsets": offsets, "sizes": sizes}
    if results and all("geometry" in r for r in results):
        out["geometry"] = np.array([r["geometry"] for r in results], dtype=np.float32).reshape(-1, 6)
    return out


def write_shard(shard_dir: Path, s: int, start: int, stop: int, image_ids: Sequence[str],
                arrays: Dict[str, np.ndarray], identity: str) -> dict:
    """Write the arrays of shard ``s`` atomically, then its commit record; returns the record."""
    files, sizes = {}, {}
    names = ARRAYS + tuple(a for a in OPTIONAL if a in arrays)
    for name in names:
        path = array_path(shard_dir, s, name)
        atomic_numpy_save(path, arrays[name])
        files[name], sizes[name] = sha256_file(path), path.stat().st_size
    meta = {"shard": s, "start": start, "stop": stop, "n_images": stop - start,
            "n_instances": int(arrays["offsets"][-1]), "ids_sha256": ids_digest(image_ids),
            "identity": identity, "files": files, "bytes": sizes,
            "sha256": hashlib.sha256("".join(files[a] for a in names).encode()).hexdigest()}
    atomic_write_json(shard_dir / f"{shard_name(s)}.json", meta)
    return meta


def read_shard_meta(shard_dir: Path, s: int) -> Optional[dict]:
    """The commit record of shard ``s``, or None when absent or unreadable."""
    path = shard_dir / f"{shard_name(s)}.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) and meta.get("shard") == s else None


def shard_problem(shard_dir: Path, s: int, start: int, stop: int, image_ids: Sequence[str],
                  identity: str, check_sums: bool = True) -> Optional[str]:
    """Why shard ``s`` is not usable as is (None = committed and intact)."""
    meta = read_shard_meta(shard_dir, s)
    if meta is None:
        return "no commit record"
    if (meta.get("start"), meta.get("stop")) != (start, stop) or meta.get("identity") != identity:
        return "written with other settings"
    if meta.get("ids_sha256") != ids_digest(image_ids):
        return "written for other image ids"
    from .verify import shard_file_problems
    found = shard_file_problems(shard_dir, s, meta, "full" if check_sums else "quick")
    return "; ".join(found) or None


def remove_shard(shard_dir: Path, s: int) -> None:
    # Commit record first: a crash half-way leaves files that no record vouches for.
    (shard_dir / f"{shard_name(s)}.json").unlink(missing_ok=True)
    for name in ARRAYS + OPTIONAL:
        array_path(shard_dir, s, name).unlink(missing_ok=True)


def remove_temp_files(shard_dir: Path) -> int:
    """Delete leftovers of interrupted atomic writes; returns how many."""
    n = 0
    for p in shard_dir.glob(".tmp-*"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def check_plan(root: Path, plan: dict) -> None:
    """Write ``plan.json``, or check that an existing one has the same settings."""
    path = root / "plan.json"
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CacheError(f"{path} is not valid JSON ({e.msg}); delete {root} or use --overwrite")
        if old.get("identity") != plan["identity"] or old.get("ids_sha256") != plan["ids_sha256"]:
            def flat(p):
                d = {k: v for k, v in p.items() if k not in ("identity", "settings")}
                d.update({k: v for k, v in p.get("settings", {}).items()})
                return d
            a, b = flat(old), flat(plan)
            diff = sorted(k.replace("ids_sha256", "image ids") for k in set(a) | set(b)
                          if a.get(k) != b.get(k))
            raise CacheError(f"{root} holds an extraction with other settings (differs in: "
                             f"{', '.join(diff) or 'format'}); pass another --out, or --overwrite "
                             f"to replace it")
        return
    atomic_write_json(path, plan)


def write_manifest(root: Path, plan: dict, image_ids: Sequence[str], metas: List[dict],
                   extra: dict) -> dict:
    """Check that the shards cover every image exactly once, then write manifest.json."""
    n = len(image_ids)
    covered = np.zeros(n, dtype=np.int64)
    for m in metas:
        covered[m["start"]:m["stop"]] += 1
    if not (covered == 1).all():
        bad = int(np.flatnonzero(covered != 1)[0])
        raise CacheError(f"shards of {root} cover image {bad} ({image_ids[bad]}) "
                         f"{int(covered[bad])} times; expected once")
    n_inst = sum(m["n_instances"] for m in metas)
    manifest = {"format": FORMAT, **{k: plan[k] for k in ("dataset", "split", "source", "top_m",
                                                           "feat_dim", "shard_size", "identity",
                                                           "settings", "ids_sha256")},
                "n_images": n, "n_instances": n_inst, **extra,
                "shards": [{k: m[k] for k in ("shard", "start", "stop", "n_images", "n_instances",
                                               "sha256", "files", "bytes") if k in m}
                           for m in metas],
                "image_ids": list(map(str, image_ids))}
    atomic_write_json(root / "manifest.json", manifest, indent=1)
    return manifest


class InstanceCache:
    """Read-only, memory-mapped view of a finished cache; ``cache[i]`` is image i.

    Only the offsets and sizes (a few bytes per image) are held in memory; the
    per-instance arrays are opened with ``mmap_mode='r'`` on first use of a
    shard, and a lookup copies just that image's rows.
    """

    def __init__(self, root, verify: str = "auto"):
        self.root = Path(root).expanduser()
        path = self.root / "manifest.json"
        if not path.is_file():
            hint = ("an extraction was started there but not finished; rerun the same "
                    "`gmbench extract` command to resume it" if (self.root / "plan.json").exists()
                    else "create it with `python -m gmbench extract ...`")
            raise CacheError(f"no instance cache at {self.root} (manifest.json missing): {hint}")
        try:
            self.manifest = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CacheError(f"{path} is not valid JSON ({e.msg}); re-extract into a new --out")
        if self.manifest.get("format") != FORMAT:
            raise CacheError(f"{path} has format {self.manifest.get('format')!r}, this reader "
                             f"reads {FORMAT!r}; re-extract the cache")
        from .verify import verify_cache
        # quick always; the full hash unless verified.json vouches for these very files
        self.verified = verify_cache(self.root, self.manifest, verify)
        self.image_ids: List[str] = self.manifest["image_ids"]
        self.feat_dim = int(self.manifest["feat_dim"])
        self.top_m = int(self.manifest["top_m"])
        shards = self.manifest["shards"]
        n = len(self.image_ids)
        self._shard_of = np.zeros(n, dtype=np.int32)
        self._start = np.zeros(n, dtype=np.int64)
        self._count = np.zeros(n, dtype=np.int32)
        self._sizes = np.zeros((n, 2), dtype=np.int32)
        for j, sh in enumerate(shards):
            a, b = sh["start"], sh["stop"]
            off = self._load(sh["shard"], "offsets")
            if off.shape != (b - a + 1,) or int(off[-1]) != sh["n_instances"]:
                raise CacheError(f"{self._path(sh['shard'], 'offsets')} does not match the "
                                 f"manifest ({b - a} images, {sh['n_instances']} instances)")
            self._shard_of[a:b], self._start[a:b], self._count[a:b] = j, off[:-1], np.diff(off)
            self._sizes[a:b] = self._load(sh["shard"], "sizes")
        self._index: Optional[Dict[str, int]] = None
        self._maps: Dict[int, Dict[str, np.ndarray]] = {}

    def _path(self, s: int, name: str) -> Path:
        return array_path(self.root / "shards", s, name)

    def _load(self, s: int, name: str, mmap: bool = False) -> np.ndarray:
        path = self._path(s, name)
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CacheError(f"cannot read {path} ({e}); the cache is damaged, re-extract it") from None

    def _arrays(self, j: int) -> Dict[str, np.ndarray]:
        if j not in self._maps:
            sh = self.manifest["shards"][j]
            arrs = {a: self._load(sh["shard"], a, mmap=True) for a in _PER_INSTANCE}
            k = sh["n_instances"]
            for a, arr in arrs.items():
                want = (k, self.feat_dim) if a == "feat" else (k, 4) if a.startswith("boxes") else (k,)
                if arr.shape != want:
                    raise CacheError(f"{self._path(sh['shard'], a)} has shape {arr.shape}, "
                                     f"expected {want}; the cache is damaged, re-extract it")
            self._maps[j] = arrs
        return self._maps[j]

    def __getstate__(self):  # DataLoader workers reopen the maps instead of copying them
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def counts(self) -> np.ndarray:
        """int32 [N] instances per image."""
        return self._count

    def __getitem__(self, i: int) -> dict:
        """Image ``i``: feat float32 [k, D], boxes float32 [k, 4] in [0, 1], boxes_px [k, 4],
        labels int64 [k], scores float32 [k], image_size (w, h); k = counts[i] <= top_m."""
        n = len(self.image_ids)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for a cache of {n} images")
        i = int(i) % n
        arrs = self._arrays(int(self._shard_of[i]))
        a = int(self._start[i])
        b = a + int(self._count[i])
        w, h = self._sizes[i]
        return {"feat": np.asarray(arrs["feat"][a:b], dtype=np.float32),
                "boxes": np.array(arrs["boxes"][a:b]), "boxes_px": np.array(arrs["boxes_px"][a:b]),
                "labels": np.asarray(arrs["labels"][a:b], dtype=np.int64),
                "scores": np.array(arrs["scores"][a:b]), "image_size": (int(w), int(h))}

    def geometry(self, i: int) -> Optional[np.ndarray]:
        """float32 [6] (a_x, b_x, a_y, b_y, orig_w, orig_h) of entry ``i`` in a views cache:
        view pixel x = a_x · original pixel x + b_x; None in a cache without geometry."""
        j = int(self._shard_of[i])
        sh = self.manifest["shards"][j]
        if "geometry" not in (sh.get("files") or {}):
            return None
        if "geometry" not in self._arrays(j):
            self._maps[j]["geometry"] = self._load(sh["shard"], "geometry", mmap=True)
        return np.array(self._maps[j]["geometry"][int(i) - int(sh["start"])])

    def index_of(self, image_id: str) -> int:
        if self._index is None:
            self._index = {k: j for j, k in enumerate(self.image_ids)}
        if image_id not in self._index:
            raise KeyError(f"image id {image_id!r} is not in the instance cache {self.root}")
        return self._index[image_id]

    def validate(self, image_ids: Sequence[str], dataset: Optional[str] = None,
                 split: Optional[str] = None) -> None:
        """Raise CacheError unless the cache holds exactly ``image_ids`` in this order."""
        m = self.manifest
        where = f"{self.root} (dataset {m.get('dataset')!r}, split {m.get('split')!r})"
        fix = "re-extract with `python -m gmbench extract` for this dataset and split"
        for key, want in (("dataset", dataset), ("split", split)):
            if want is not None and m.get(key) != want:
                raise CacheError(f"instance cache {where} is for {key} {m.get(key)!r}, not {want!r}; {fix}")
        ids = list(map(str, image_ids))
        if len(ids) != len(self.image_ids):
            raise CacheError(f"instance cache {where} has {len(self.image_ids)} images, the "
                             f"dataset has {len(ids)}; {fix}")
        if ids_digest(ids) != m["ids_sha256"]:
            j = next((k for k, (a, b) in enumerate(zip(ids, self.image_ids)) if a != b), 0)
            raise CacheError(f"instance cache {where} differs from the dataset at image {j}: "
                             f"cache has {self.image_ids[j]!r}, dataset has {ids[j]!r}; {fix}")

    def verify(self) -> None:
        """Recompute every file's sha256 (reads the whole cache once); CacheError on damage."""
        from .verify import verify_cache
        self.verified = verify_cache(self.root, self.manifest, "full")


def open_cache(root, image_ids: Optional[Sequence[str]] = None,
               verify: str = "auto") -> InstanceCache:
    """Open the cache in ``root``; with ``image_ids`` also ``validate`` it against them.

    ``verify``: 'auto' (quick check, plus a full sha256 check unless the cache's
    ``verified.json`` stamp still vouches for its files), 'quick' or 'full'; see
    ``gmbench.instances.verify``. Damage raises CacheError naming the files.
    """
    cache = InstanceCache(root, verify)
    if image_ids is not None:
        cache.validate(image_ids)
    return cache
