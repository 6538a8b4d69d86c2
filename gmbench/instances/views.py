"""``model.features: views``: the frozen detector's instances of K augmented views of each
training image, extracted once into an instance cache; each epoch reads one view per image.

It is online mode (``online.py``) with the augmentation fixed in advance: view ``v`` of
training image ``i`` is the image the data's train transform makes under
``sample_rng(view_seed, v, i)`` (``gmbench/data/dataset.py``), i.e. exactly the crop and flip
a trunk row with seed ``view_seed`` draws for image ``i`` in epoch ``v``; the detector sees it
as online mode would (``detector_input: squashed | crop``, through the same
``OnlineDetector.detections``). The test split is one view per image, its (un-augmented) test
transform, which is also what online mode's detector sees at test time.

Storage is the ordinary instance cache (``cache.py``: atomic shards, commit records, manifest,
``verify.py`` checks on every open) over N·K entries, entry ``i·K + v`` = view ``v`` of image
``i`` (ids ``ID#vV``), boxes normalised in the view, plus each entry's ``geometry`` (the map
from the original image to the view). Its folder is keyed by K and the augmentation (preset,
its repr, image size, view seed, detector input and detector), and the plan's identity holds
them too, so a changed K or transform never reuses an old cache.

Which view epoch ``e`` reads for image ``i`` (:func:`view_of`): epochs are taken in cycles of
K; cycle ``c = e // K`` visits the K views in a permutation drawn from (run seed, i, c). Every
view is read once per cycle, the order differs between images, seeds and cycles, and the
choice is a pure function of (seed, epoch, i), so runs are reproducible and resume exactly.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..data.base import data_cache_dir
from ..data.dataset import sample_rng
from ..data.geometry import transform_with_geometry
from ..data.transforms import build_transform
from ..models.instance_settings import instance_settings
from ..utils.io import config_digest

VIEWS_BATCH = 16  # detector batch of the extraction (part of the cache identity)


def view_of(seed: int, epoch: int, index: int, views: int) -> int:
    """The view (0..views-1) that epoch ``epoch`` of a run with seed ``seed`` reads for image
    ``index``: position ``epoch % views`` of a permutation of the views seeded by
    (seed, index, epoch // views)."""
    if views == 1:
        return 0
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, epoch // views, 0x7613]))
    return int(rng.permutation(views)[epoch % views])


def view_ids(image_ids: Sequence[str], views: int) -> List[str]:
    """The cache's entry ids: ``ID#vV``, image-major (entry i·K + v)."""
    return [f"{i}#v{v}" for i in map(str, image_ids) for v in range(views)]


def augmentation(data_cfg, train: bool, inst) -> dict:
    """What decides the views of a split: the transform (preset, its repr, size) and, for the
    training split, K and the view seed; the detector's input view."""
    preset = data_cfg.train_transform if train else data_cfg.test_transform
    tf = build_transform(preset, data_cfg.image_size, train)
    return {"transform": preset, "train": train, "image_size": data_cfg.image_size,
            "transform_repr": re.sub(r"\s+", " ", repr(tf)), "views": inst.views if train else 1,
            "view_seed": inst.view_seed if train else None, "detector_input": inst.detector_input}


def detector_config(inst, weights: Optional[str] = None) -> dict:
    """The detector a views cache is made with, as ``online.build_online_detector`` builds it
    (``weights``: a file the runner trained, used at the size it was trained at)."""
    if weights is not None:
        return {"weights": str(Path(weights).expanduser().resolve()), "seed": inst.detector_seed,
                "min_size": None, "max_size": None}
    w = inst.detector_weights
    if w not in ("coco", "none"):
        w = str(Path(w).expanduser().resolve())
    return {"weights": w, "seed": inst.detector_seed, "min_size": inst.detector_min_size,
            "max_size": inst.detector_max_size}


def views_dir(base, split: str, train: bool, aug: dict, det: dict, top_m: int) -> Path:
    """DATA_CACHE/instances/SPLIT-viewsK-mM-DIGEST; DIGEST covers the augmentation and detector."""
    digest = config_digest({"augmentation": aug, "detector": det, "top_m": top_m})[:12]
    return Path(base).expanduser() / "instances" / f"{split}-views{aug['views']}-m{top_m}-{digest}"


def trained_weights(cfg, root) -> Optional[Path]:
    """Where the runner writes the row's trained detector (None without a ``detector`` block)."""
    if getattr(cfg, "detector", None) is None:
        return None
    from .layout import detector_key
    return data_cache_dir(cfg.data, root) / "detectors" / detector_key(cfg) / "detector.pth"


def cache_paths(cfg, root) -> List[tuple]:
    """[(split, folder, train?)] of a views-mode config's two caches ([] without a data cache)."""
    inst, d = instance_settings(cfg.model), cfg.data
    base = data_cache_dir(d, root)
    if inst is None or inst.features != "views" or base is None:
        return []
    w = trained_weights(cfg, root)
    det = detector_config(inst, None if w is None else str(w))
    return [(split, views_dir(base, split, train, augmentation(d, train, inst), det, inst.top_m), train)
            for split, train in ((d.train_split, True), (d.test_split, False))]


class ViewEntries:
    """The N·K entries of a split as ``run_extraction`` reads a LabelSet: ids and image paths."""

    def __init__(self, labels, views: int):
        self.views = views
        self.image_ids = view_ids(labels.image_ids, views)
        self.image_paths = [p for p in labels.image_paths for _ in range(views)]

    def __len__(self) -> int:
        return len(self.image_ids)


class ViewsSource:
    """Instance source for ``run_extraction``: entry e = (image e // K, view e % K) → the view
    (train transform under ``sample_rng(view_seed, view, image)``, or the test transform) →
    ``OnlineDetector.detections``. Results carry boxes in view pixels, the view's size and the
    view's geometry [6]."""
    kind = "detector"

    def __init__(self, detector, data_cfg, inst, train: bool, device):
        self.detector, self.train, self.device = detector, train, torch.device(device)
        self.views = inst.views if train else 1
        self.view_seed = inst.view_seed
        self.aug = augmentation(data_cfg, train, inst)
        self.transform = build_transform(self.aug["transform"], data_cfg.image_size, train)
        self.feat_dim, self.top_m = detector.feat_dim, detector.top_m
        self.class_names = detector.class_names
        self.times: Dict[str, float] = {"transform": 0.0, "detector": 0.0}

    @property
    def settings(self) -> dict:
        s = dict(self.detector.settings, mode="views", augmentation=self.aug, views=self.views)
        return s

    def view(self, image: Image.Image, index: int, v: int):
        """(normalised view [3, S, S], geometry [6]) of image ``index``, view ``v``."""
        if not self.train:
            return transform_with_geometry(self.transform, image)
        with sample_rng(self.view_seed, v, index):
            return transform_with_geometry(self.transform, image)

    def __call__(self, images: Sequence[torch.Tensor], indices: Sequence[int]) -> List[dict]:
        t0 = time.perf_counter()
        xs, geos = [], []
        for im, e in zip(images, indices):
            i, v = divmod(int(e), self.views)
            x, g = self.view(Image.fromarray(im.permute(1, 2, 0).numpy()), i, v)
            xs.append(x)
            geos.append(g)
        x, g = torch.stack(xs).to(self.device), torch.stack(geos)
        t1 = time.perf_counter()
        dets = self.detector.detections(x, g.to(self.device))
        self.times["transform"] += t1 - t0
        self.times["detector"] += time.perf_counter() - t1
        H, W = x.shape[-2:]
        scale = torch.tensor([W, H, W, H], dtype=torch.float32)
        return [{"boxes_px": (d["boxes"].cpu() * scale).numpy(), "feat": d["feat"].cpu().numpy(),
                 "labels": d["labels"].cpu().numpy(), "scores": d["scores"].cpu().numpy(),
                 "size": (W, H), "geometry": gi.numpy()} for d, gi in zip(dets, g)]


class ViewsCache:
    """A views cache opened for a run: ``at(i, epoch)`` is image i's view for that epoch
    (:func:`view_of` with the run's seed); ``[i]`` is its view 0 (the test split's only view)."""

    def __init__(self, cache, seed: int = 0):
        self.cache, self.seed, self.root = cache, seed, cache.root
        self.views = int(cache.manifest["settings"].get("views", 0))
        if self.views < 1 or len(cache) % self.views:
            raise ValueError(f"{cache.root} is not a views cache (its manifest names no views "
                             f"count K dividing its {len(cache)} entries); re-extract it")

    def __len__(self) -> int:
        return len(self.cache) // self.views

    def __getitem__(self, i: int) -> dict:
        return self.cache[int(i) * self.views]

    def at(self, i: int, epoch: int) -> dict:
        return self.cache[int(i) * self.views + view_of(self.seed, epoch, int(i), self.views)]

    def validate(self, image_ids, dataset=None, split=None) -> None:
        self.cache.validate(view_ids(image_ids, self.views), dataset=dataset, split=split)


def extract(labels, out: Path, detector, data_cfg, inst, train: bool, device, *, dataset: str,
            split: str, batch_size: int = VIEWS_BATCH, overwrite: bool = False, log=None,
            progress: bool = False) -> dict:
    """Extract the views of one split into ``out`` (resumable, verified; ``run_extraction``)."""
    from .pipeline import run_extraction
    src = ViewsSource(detector, data_cfg, inst, train, device)
    return run_extraction(ViewEntries(labels, src.views), out, src, dataset=dataset, split=split,
                          top_m=inst.top_m, batch_size=batch_size, overwrite=overwrite, log=log,
                          progress=progress)


# prepare_views() results in this process: train cache folder → summary.
_DONE: Dict[str, dict] = {}


def prepare_views(cfg, root, weights: Optional[str], log=print) -> dict:
    """Extract (or verify) both splits' views caches of a views-mode run, once per folder per
    process; rank 0 works, the others wait. ``weights``: the row's trained detector, if any.
    Returns {"caches": [train, test], "detector_passes", "seconds"}."""
    from ..utils import dist
    paths = cache_paths(cfg, root)
    if not paths:
        raise FileNotFoundError("model.features=views needs a data cache folder for its views "
                                "caches: set data.root or data.cache_dir")
    key = str(paths[0][1])
    if key in _DONE:
        return _DONE[key]
    if not dist.is_main():
        dist.barrier()
        _DONE[key] = {"caches": [str(p) for _, p, _ in paths]}
        return _DONE[key]
    try:
        _DONE[key] = _extract_both(cfg, root, paths, weights, log)
    finally:
        dist.barrier()
    return _DONE[key]


def _extract_both(cfg, root, paths, weights, log) -> dict:
    import json

    from ..data import get_spec
    from ..utils.env import resolve_device
    from .online import build_online_detector
    from .pipeline import make_plan
    t0 = time.perf_counter()
    d, inst = cfg.data, instance_settings(cfg.model)
    device = resolve_device(cfg.device)
    det = build_online_detector(inst, weights)
    spec, passes = get_spec(d.name), 0
    for split, out, train in paths:
        labels = spec.read_labels(root, split, d)
        src = ViewsSource(det, d, inst, train, device)
        plan = make_plan(src, ViewEntries(labels, src.views), d.name, split, inst.top_m, 512, VIEWS_BATCH)
        old = out / "plan.json"
        stale = old.is_file() and json.loads(old.read_text()).get("identity") != plan["identity"]
        if stale:
            log(f"   {out} holds views of other weights/settings; re-extracting")
        done = (out / "manifest.json").is_file() and not stale
        res = extract(labels, out, det, d, inst, train, device, dataset=d.name, split=split,
                      overwrite=stale, log=lambda m: log("   " + m))
        if not res["complete"]:
            raise RuntimeError(f"views extraction into {out} did not complete; rerun to continue")
        if not done:
            passes += res["n_images"]
            log(f"   views of {d.name}/{split}: {src.views} per image × {len(labels)} images = "
                f"{len(labels) * src.views} detector passes in {res['seconds']:.1f}s → {out}")
    info = {"caches": [str(p) for _, p, _ in paths], "detector_passes": passes,
            "seconds": round(time.perf_counter() - t0, 2)}
    return info


def open_views(cfg, root) -> List[ViewsCache]:
    """[train, test] views caches of a views-mode run, opened (and verified) for reading."""
    from .cache import open_cache
    paths = cache_paths(cfg, root)
    if not paths:
        raise FileNotFoundError(f"{cfg.model.name} (model.features=views) cannot locate its views "
                                f"caches: set data.root or data.cache_dir")
    out = []
    for split, path, train in paths:
        if not (path / "manifest.json").is_file():
            inst = instance_settings(cfg.model)
            raise FileNotFoundError(
                f"{cfg.model.name} (model.features=views) needs the views cache {path} for split "
                f"{split!r}; `python -m gmbench run` extracts it, or run `python -m gmbench extract "
                f"--dataset {cfg.data.name} --split {split} --views {inst.views if train else 1} "
                f"--top-m {inst.top_m}` with the row's data options")
        out.append(ViewsCache(open_cache(path), seed=cfg.seed if train else 0))
    return out


def step(cfg, root, n_train: Optional[int], n_test: Optional[int]) -> Optional[str]:
    """One dry-run line naming a views row's extraction step and its detector passes."""
    inst = instance_settings(cfg.model)
    if inst is None or inst.features != "views":
        return None
    paths = cache_paths(cfg, root)
    where = str(paths[0][1].parent) if paths else "DATA_CACHE/instances"
    n = "?" if n_train is None else f"{inst.views * n_train:,}"
    t = "?" if n_test is None else f"{n_test:,}"
    return (f"views step (once, shared by the row's seeds): the detector on {inst.views} augmented "
            f"views × {'?' if n_train is None else f'{n_train:,}'} {cfg.data.train_split} images = "
            f"{n} detector passes, + {t} {cfg.data.test_split} images un-augmented, into {where}")
