"""Extraction driver: decode → instance source → atomic shards → manifest.

* Resume: shards whose commit record and checksums hold are skipped; any other
  leftovers of a shard (and stray ``.tmp-*`` files) are removed and redone.
* A finished cache is verified (``verify``: full sha256 by default, quick, or
  none); shards that fail are reported, removed with the manifest, and
  re-extracted, so a rerun repairs a damaged cache instead of calling it complete.
* SIGINT/SIGTERM (under ``signals.guard()``) stop the loop after the current
  batch: the shard being filled lives only in memory and is dropped, every
  written shard is whole, and :class:`Interrupted` goes up; a rerun resumes.
* torchrun: shard ``s`` goes to rank ``s % world_size``; every rank writes its
  own shards, and after a barrier rank 0 checks that the shards cover every
  image exactly once and writes the manifest.  Batches never cross a shard
  boundary, so a shard's content (batch padding included) does not depend on
  the number of processes: 2-process output equals 1-process output.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torchvision
from PIL import Image, UnidentifiedImageError

from ..data.base import LabelSet
from ..utils import dist, signals
from . import cache as C
from . import verify as V


def decode_image(path) -> torch.Tensor:
    """uint8 [3, H, W] RGB; a clear error naming the file when it cannot be read."""
    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"))  # writable copy for torch.from_numpy
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise RuntimeError(f"cannot read image {path} ({type(e).__name__}: {e}); run "
                           f"`python -m gmbench data check` to list every bad file") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class ImageFiles(torch.utils.data.Dataset):
    """Item i → (i, uint8 [3, H, W], decode seconds)."""

    def __init__(self, paths):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        t = time.perf_counter()
        img = decode_image(self.paths[i])
        return i, img, time.perf_counter() - t


def _as_list(items):
    return items


def make_loader(paths, batches: List[List[int]], num_workers: int, pin: bool):
    """DataLoader over ``batches`` (lists of image indices), decoding in worker processes."""
    kw = dict(prefetch_factor=4, persistent_workers=False) if num_workers > 0 else {}
    return torch.utils.data.DataLoader(ImageFiles(paths), batch_sampler=batches,
                                       num_workers=num_workers, collate_fn=_as_list,
                                       pin_memory=pin, **kw)


def make_plan(source, labels: LabelSet, dataset: str, split: str, top_m: int,
              shard_size: int, batch_size: int) -> dict:
    # Batch size is part of the identity: images of a batch are zero-padded to a
    # common size, which changes features near the bottom/right edges a little.
    settings = dict(source.settings, batch_size=batch_size)
    core = {"format": C.FORMAT, "dataset": dataset, "split": split, "source": source.kind,
            "top_m": top_m, "feat_dim": source.feat_dim, "feat_dtype": "float16",
            "shard_size": shard_size, "settings": settings}
    return dict(core, identity=C.settings_digest(core), ids_sha256=C.ids_digest(labels.image_ids),
                n_images=len(labels))


def _prepare_dir(out: Path, plan: dict, overwrite: bool, log) -> bool:
    """Rank 0: check/write the plan, clean temp files. Returns True if already complete."""
    shard_dir = out / "shards"
    if overwrite:
        for p in [out / "manifest.json", out / V.STAMP, out / "plan.json",
                  *shard_dir.glob("shard-*")]:
            p.unlink(missing_ok=True)
    man = out / "manifest.json"
    C.check_plan(out, plan)
    shard_dir.mkdir(parents=True, exist_ok=True)
    n_tmp = C.remove_temp_files(shard_dir)
    if n_tmp:
        log(f"removed {n_tmp} temp file(s) left by an interrupted extraction")
    return man.exists()


def _collective(fn: Callable, what: str):
    """Run ``fn`` on rank 0 and share its result; an error there stops every rank."""
    ok, result, err = True, None, None
    if dist.is_main():
        try:
            result = fn()
        except Exception as e:  # re-raised below, after the other ranks know
            ok, err = False, e
    if not dist.all_true(ok):
        if err is not None:
            raise err
        raise RuntimeError(f"rank 0 failed while {what}; see its error")
    return dist.broadcast_object(result)


def _merge(out: Path, plan: dict, labels: LabelSet, ranges, extra: dict) -> Optional[dict]:
    """Rank 0: the manifest when every shard is committed, else None."""
    shard_dir = out / "shards"
    metas = []
    for s, (a, b) in enumerate(ranges):
        meta = C.read_shard_meta(shard_dir, s)
        if meta is None or meta.get("identity") != plan["identity"]:
            return None
        if meta.get("ids_sha256") != C.ids_digest(labels.image_ids[a:b]) or \
                (meta["start"], meta["stop"]) != (a, b):
            raise C.CacheError(f"shard {s} of {out} was written for other images; "
                               f"rerun with --overwrite")
        metas.append(meta)
    counts = np.concatenate([np.diff(np.load(shard_dir / f"{C.shard_name(s)}.offsets.npy",
                                             allow_pickle=False)) for s in range(len(ranges))]
                            or [np.zeros(0, np.int64)])
    top_m = plan["top_m"]
    stats = {"min": int(counts.min(initial=0)), "max": int(counts.max(initial=0)),
             "mean": float(counts.mean()) if len(counts) else 0.0,
             "images_below_m": int((counts < top_m).sum()), "images_empty": int((counts == 0).sum())}
    return C.write_manifest(out, plan, labels.image_ids, metas, dict(extra, counts=stats))


def _check_finished(out: Path, level: str, ranges, rank: int, world: int):
    """This rank's damaged shards of the finished cache in ``out`` ({shard: problems});
    None when the manifest itself cannot be trusted (then resume rechecks every shard)."""
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != C.FORMAT or \
            V.manifest_problem(manifest) or len(manifest["shards"]) != len(ranges):
        return None
    return V.check_shards(out, manifest, level, range(rank, len(ranges), world))


def _scan(out: Path, plan: dict, labels: LabelSet, ranges, rank: int, world: int, log):
    """(shards of this rank to extract, shards already done), after removing the
    leftovers of every shard whose commit record or checksums do not hold."""
    shard_dir = out / "shards"
    todo, skipped = [], 0
    for s in range(rank, len(ranges), world):
        signals.check(f"extraction into {out}")
        a, b = ranges[s]
        problem = C.shard_problem(shard_dir, s, a, b, labels.image_ids[a:b], plan["identity"])
        if problem is None:
            skipped += 1
            continue
        if problem != "no commit record" or any(shard_dir.glob(f"{C.shard_name(s)}.*")):
            log(f"redoing shard {s}: {problem}")
        C.remove_shard(shard_dir, s)
        todo.append(s)
    return todo, skipped


def _stat_files(out: Path):
    """(manifest digest, file keys) for the stamp; None when the manifest is unreadable."""
    try:
        return V.manifest_digest(out), V.file_keys(out, json.loads(
            (out / "manifest.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _unfinish(out: Path) -> None:
    # manifest first: if killed after this, a rerun resumes and rechecks every shard
    (out / "manifest.json").unlink(missing_ok=True)
    V.remove_stamp(out)


def run_extraction(labels: LabelSet, out, source, *, dataset: str, split: str, top_m: int,
                   shard_size: int = 512, batch_size: int = 4, num_workers: int = 0,
                   max_shards: Optional[int] = None, overwrite: bool = False,
                   progress: bool = False, log=None, verify: str = "full") -> Dict[str, object]:
    """Extract instances of every image in ``labels`` into the cache directory ``out``.

    ``source`` is a DetectorSource or BoxesSource. Under torchrun (process group
    initialised) the shards are split over the ranks. ``max_shards`` bounds the
    shards this call writes per rank (for time-limited jobs; rerun to go on).
    ``verify`` (full | quick | none) is how a cache found finished is checked; damaged
    shards are re-extracted. A signal caught by ``signals.guard()`` raises Interrupted
    after the current batch (the unfinished shard is dropped; rerun to resume).
    Returns a summary of this rank: complete, shards written/skipped, repaired (shards
    re-extracted after failing verification), verified (the level a finished cache
    passed, else None), images, seconds (loop wall time), decode_s (summed over loader
    workers), wait_s (the loop waiting for decoded images), write_s, transform and
    detector seconds.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out).expanduser()
    n = len(labels)
    if len(labels.image_paths) != n:
        raise ValueError(f"the label set has {n} ids but {len(labels.image_paths)} image paths")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if verify not in ("full", "quick", "none"):
        raise ValueError(f"--verify must be full, quick or none, got {verify!r}")
    ranges = C.shard_ranges(n, shard_size)
    plan = make_plan(source, labels, dataset, split, top_m, shard_size, batch_size)
    rank, world = dist.rank(), dist.world_size()
    source.times = {k: 0.0 for k in source.times}  # timings of this call only
    shard_dir = out / "shards"
    summary = {"complete": True, "written": 0, "skipped": len(ranges), "repaired": [],
               "verified": None if verify == "none" else verify, "n_images": 0,
               "seconds": 0.0, "decode_s": 0.0, "wait_s": 0.0, "write_s": 0.0,
               **source.times, "out": str(out)}
    todo, repaired = None, []
    if _collective(lambda: _prepare_dir(out, plan, overwrite, log), "preparing " + str(out)):
        if verify == "none":
            return summary
        # stat before hashing, so a write during the check is not vouched for
        stamp = _stat_files(out) if verify == "full" and dist.is_main() else None
        dist.barrier()
        mine = _check_finished(out, verify, ranges, rank, world)
        if dist.all_true(mine == {}):
            if stamp is not None:
                V.write_stamp(out, *stamp)
            return summary
        _collective(lambda: _unfinish(out), "removing the manifest of " + str(out))
        if mine is None:
            log(f"{out / 'manifest.json'} is unreadable or inconsistent; checking every shard")
        else:
            for s in sorted(mine):
                log(f"shard {s} of {out} failed the {verify} check: {'; '.join(mine[s])}; "
                    f"re-extracting it")
                C.remove_shard(shard_dir, s)
            todo = repaired = sorted(mine)
            skipped = len(range(rank, len(ranges), world)) - len(todo)
    if todo is None:
        todo, skipped = _scan(out, plan, labels, ranges, rank, world, log)
    if max_shards is not None:
        todo = todo[:max_shards]
    batches = [list(range(j, min(j + batch_size, ranges[s][1])))
               for s in todo for j in range(ranges[s][0], ranges[s][1], batch_size)]
    loader = make_loader(labels.image_paths, batches, num_workers,
                         pin=getattr(source, "device", torch.device("cpu")).type == "cuda")
    it = loader
    if progress and dist.is_main():
        from tqdm import tqdm
        it = tqdm(loader, total=len(batches), unit="batch", desc=f"extract {dataset}/{split}")
    pending: Dict[int, List[dict]] = {}
    written, n_done = 0, 0
    tm = {"decode_s": 0.0, "wait_s": 0.0, "write_s": 0.0}  # wait = main loop starved of images
    t0 = t_wait = time.perf_counter()
    for batch in it:
        tm["wait_s"] += time.perf_counter() - t_wait
        idx = [b[0] for b in batch]
        tm["decode_s"] += sum(b[2] for b in batch)
        s = idx[0] // shard_size
        pending.setdefault(s, []).extend(source([b[1] for b in batch], idx))
        a, b = ranges[s]
        if len(pending[s]) == b - a:
            tw = time.perf_counter()
            arrays = C.pack_shard(pending.pop(s), source.feat_dim)
            C.write_shard(shard_dir, s, a, b, labels.image_ids[a:b], arrays, plan["identity"])
            written, n_done = written + 1, n_done + (b - a)
            tm["write_s"] += time.perf_counter() - tw
        if signals.received() is not None:
            if pending:
                log(f"stopping: shard(s) {', '.join(map(str, pending))} not finished, dropped "
                    f"({written} written by this call); rerun to resume")
            signals.check(f"extraction into {out}")
        t_wait = time.perf_counter()
    seconds = time.perf_counter() - t0
    dist.barrier()
    extra = {"label_space": "detector" if source.kind == "detector" else "dataset",
             "class_names": source.class_names, "world_size": world,
             "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__}}
    complete = _collective(lambda: _merge(out, plan, labels, ranges, extra) is not None,
                           "merging shards")
    if not complete and dist.is_main():
        done = sum(C.read_shard_meta(shard_dir, s) is not None for s in range(len(ranges)))
        log(f"{done}/{len(ranges)} shards of {out} are done; rerun the same command to continue")
    return dict(summary, complete=complete, written=written, skipped=skipped,
                repaired=repaired, verified=None, n_images=n_done, seconds=seconds, **tm,
                **source.times)
