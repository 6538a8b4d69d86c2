"""Where a run's instances come from, in one module: no instances, annotation boxes, an
instance cache (of annotation boxes or of a detector), a detector the runner trains from the
row's ``detector:`` block, or the frozen detector run online on every batch.

Every reader takes the method's typed :class:`~gmbench.models.instance_settings.InstanceSettings`
and the dataset's cache folder (:func:`gmbench.data.base.data_cache_dir`); the verbs:

* :func:`check` — at validation: a ``detector:`` block fits the instance settings;
* :func:`prepare` — before a run: train (or find) the row's detector and extract (or
  verify) both splits' caches, once per (data config, detector config) per process;
* :func:`files` — what a run opens besides the annotations (the dry run lists them);
* :func:`open_sources` — for a built model: the open caches, or the attached online detector;
* :func:`describe` — the record's ``protocol`` block (what the run saw), from the config
  alone when ``model`` is None, so a plan can be checked before anything runs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ..data.base import data_cache_dir
from ..models.instance_settings import InstanceSettings, instance_settings
from .. import pretrain
from ..utils.io import config_digest
from . import default_cache_dir as cache_dir
from . import provenance
from .layout import detector_key  # noqa: F401  (part of this module's interface)

# prepare()'s results in this process: detector key → {"weights", "sha256", ...}.
_PREPARED: Dict[str, dict] = {}


def check(cfg) -> None:
    """ValueError unless a run config's ``detector`` block (if any) feeds the method's
    detector instances: a detector-instance cache (the runner trains the detector and
    extracts both splits with it) or online mode (the runner trains it; the online
    detector loads its weights file)."""
    if getattr(cfg, "detector", None) is None:
        return
    m, inst = cfg.model, instance_settings(cfg.model)
    if inst is None or not inst.reads_detector:
        raise ValueError(
            f"config key 'detector' is set, but method {m.name!r} does not read detector instances "
            f"(it needs model.features=online or views, or model.features=cache with "
            f"model.instance_source=detector); remove the detector block from this row")
    if inst.runs_detector and inst.detector_weights != "coco":  # coco: the default
        raise ValueError(
            f"config key 'detector' is set together with model.detector_weights="
            f"{inst.detector_weights!r}; the online detector loads the weights the runner trains "
            f"from the detector block: drop one of them")
    if inst.cache_train or inst.cache_test:
        raise ValueError("config key 'detector' is set together with model.cache_train/cache_test; "
                         "the runner extracts the detector's instances itself: drop one of them")
    if inst.feat_dim != cfg.detector.representation_size:
        raise ValueError(
            f"model.feat_dim={inst.feat_dim} but detector.representation_size="
            f"{cfg.detector.representation_size} (the width of the instance features); make them equal")


def detector_step(cfg, root: Optional[Path]) -> Optional[str]:
    """One line for the dry run naming a row's detector-training step (None without a
    ``detector`` block): what is trained, on which split, where, and what then reads it."""
    dcfg = getattr(cfg, "detector", None)
    if dcfg is None:
        return None
    d, inst, key = cfg.data, instance_settings(cfg.model), detector_key(cfg)
    base = data_cache_dir(d, root)
    where = base / "detectors" / key if base is not None else f"DATA_CACHE/detectors/{key}"
    then = {"online": "the online detector loads its weights",
            "views": "the views step below extracts with it"}.get(
        inst.features, f"then extracts top-{inst.top_m} instances of {d.train_split} and {d.test_split}")
    backbone = dcfg.backbone_weights
    if pretrain.detector_uses(cfg):
        backbone = f"synthetic pretraining {pretrain.digest(cfg.pretrain)}"
    return (f"detector step: train {dcfg.arch} Faster R-CNN ({dcfg.epochs} epochs, "
            f"backbone {backbone}, {dcfg.min_size}/{dcfg.max_size} px) on the boxes of "
            f"{d.name}/{d.train_split} only, in {where}; {then}")


def cache_paths(cfg, root: Optional[Path]) -> List[Tuple[str, Path]]:
    """[(split, cache dir)] for train and test of a cache-mode config; splits whose folder
    cannot be known (no root, no data.cache_dir, no explicit path) are left out."""
    inst = instance_settings(cfg.model)
    if inst is None or inst.features != "cache":
        return []
    d = cfg.data
    base = data_cache_dir(d, root)
    out = []
    for split, given in ((d.train_split, inst.cache_train), (d.test_split, inst.cache_test)):
        if given:
            out.append((split, Path(given).expanduser()))
        elif base is not None:
            out.append((split, row_cache_dir(cfg, base, split)))
    return out


def row_cache_dir(cfg, base: Path, split: str) -> Path:
    """A split's instance cache: the default folder (``gmbench extract``'s), except for a row
    that trains its own detector, whose instances live under that detector's folder, so that
    rows (or seeds: ``detector.seed: run``) with different detectors never share a cache."""
    inst = instance_settings(cfg.model)
    if getattr(cfg, "detector", None) is not None:
        return base / "detectors" / detector_key(cfg) / "instances" / f"{split}-detector-m{inst.top_m}"
    return cache_dir(base, split, inst.source, inst.top_m)


def detector_weights_file(inst: Optional[InstanceSettings]) -> Optional[Path]:
    """The weights file online mode reads: a path, or torchvision's COCO file in the hub
    cache for ``coco``; None for other modes and ``none`` (random init)."""
    if inst is None or not inst.runs_detector or inst.detector_weights == "none":
        return None
    if inst.detector_weights == "coco":
        from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

        from ..models.weights import hub_weights_path
        return hub_weights_path(FasterRCNN_ResNet50_FPN_Weights.COCO_V1)
    return Path(inst.detector_weights).expanduser()


def files(cfg, root: Optional[Path]) -> List[Tuple[str, Path]]:
    """[(what, path)] a run opens for its instances: the caches' manifests, or the online
    detector's weights. A row whose ``detector`` block makes its caches lists nothing: the
    runner writes them."""
    if getattr(cfg, "detector", None) is not None:
        return []
    out = [(f"instance cache, split {split}", p / "manifest.json") for split, p in cache_paths(cfg, root)]
    weights = detector_weights_file(instance_settings(cfg.model))
    if weights is not None:
        out.append((f"{instance_settings(cfg.model).features} detector weights", weights))
    return out


def prepare(cfg, root, log: Callable[[str], None] = print) -> dict:
    """Train the row's detector and extract both splits' instances with it, and in views mode
    extract both splits' views (a no-op for other rows). Rank 0 works; other ranks wait, then
    read its record.

    Returns {"weights", "sha256", "record", "caches", "box_AP50", "seconds"} for a
    ``detector`` block (+ "views": the views caches), {"views": ...} for a views row without
    one, else {}. Reruns find the weights and caches on disk and skip the work.
    """
    info = _prepare_detector(cfg, root, log) if getattr(cfg, "detector", None) is not None else {}
    inst = instance_settings(cfg.model)
    if inst is None or inst.features != "views":
        return info
    from .views import prepare_views
    return dict(info, views=prepare_views(cfg, root, info.get("weights"), log))


def _prepare_detector(cfg, root, log) -> dict:
    key = detector_key(cfg)
    if key in _PREPARED:
        return _PREPARED[key]
    from ..utils import dist
    if not dist.is_main():
        dist.barrier()
        rec_path = data_cache_dir(cfg.data, root) / "detectors" / key / "record.json"
        rec = json.loads(rec_path.read_text())
        _PREPARED[key] = {"weights": rec["weights"], "sha256": rec["sha256"], "record": str(rec_path)}
        return _PREPARED[key]
    try:
        _PREPARED[key] = _train_and_extract(cfg, root, key, log)
    finally:
        dist.barrier()
    return _PREPARED[key]


def _train_and_extract(cfg, root, key: str, log) -> dict:
    import torch

    from ..utils.env import torch_threads

    from ..data import get_spec
    from ..detector.train import train_detector
    from .extract import DetectorConfig, DetectorSource
    from .pipeline import make_plan, run_extraction
    t0 = time.perf_counter()
    if pretrain.detector_uses(cfg):  # its trunk starts from the synthetic pretraining
        pretrain.prepare(cfg.pretrain, log)
    dcfg, d, inst = pretrain.resolve_detector(cfg), cfg.data, instance_settings(cfg.model)
    top_m = inst.top_m
    spec = get_spec(d.name)
    train = spec.read_labels(root, d.train_split, d)
    test = spec.read_labels(root, d.test_split, d)
    base = data_cache_dir(d, root)
    with torch_threads(dcfg.num_threads):
        log(f"   detector {key}: {dcfg.arch} on {d.name}/{d.train_split} boxes "
            f"({base / 'detectors' / key})")
        rec = train_detector(dcfg, train, test, base / "detectors" / key, dataset=d.name,
                             train_split=d.train_split, test_split=d.test_split,
                             data_config=d.model_dump(mode="json"), log=lambda m: log("   " + m))
        weights = Path(rec["weights"])
        source = DetectorSource(DetectorConfig(weights=str(weights), score_thresh=dcfg.score_thresh),
                                top_m, torch.device("cpu"))
        caches = []
        # online mode reads no cache (the online detector loads the weights file itself); views
        # mode extracts its own caches (views.prepare_views)
        splits = () if inst.runs_detector else ((d.train_split, train), (d.test_split, test))
        for split, labels in splits:
            out = row_cache_dir(cfg, base, split)
            plan = make_plan(source, labels, d.name, split, top_m, 512, dcfg.extract_batch_size)
            old = out / "plan.json"
            stale = old.is_file() and json.loads(old.read_text()).get("identity") != plan["identity"]
            if stale:
                log(f"   {out} holds instances of other weights/settings; re-extracting")
            res = run_extraction(labels, out, source, dataset=d.name, split=split, top_m=top_m,
                                 shard_size=512, batch_size=dcfg.extract_batch_size, num_workers=0,
                                 overwrite=stale, log=lambda m: log("   " + m))
            if not res["complete"]:
                raise RuntimeError(f"extraction into {out} did not complete; rerun to continue")
            caches.append(str(out))
    ap = (rec.get("box_ap") or {}).get("AP50")
    info = {"weights": str(weights), "sha256": rec["sha256"], "record": str(weights.parent / "record.json"),
            "caches": caches, "box_AP50": ap, "seconds": round(time.perf_counter() - t0, 2)}
    log(f"   detector ready in {info['seconds']:.0f}s (box AP@0.5 on {d.test_split}: "
        f"{'n/a' if ap is None else f'{100 * ap:.1f}'}); "
        + (f"instances in {', '.join(caches)}" if caches else f"the {inst.features} detector loads it"))
    return info


def view_transform(cfg, transform):
    """``transform``, wrapped so the dataset also yields each view's geometry when the online
    detector reads it (``model.detector_input: crop``); otherwise unchanged."""
    inst = instance_settings(cfg.model)
    if inst is None or not inst.needs_geometry:
        return transform
    from ..data.geometry import GeometryTransform
    return GeometryTransform(transform)


def open_sources(model, cfg, root: Path):
    """What ``model`` reads its instances from: (train, test) open instance caches (None in
    other modes); in online mode the detector is attached to the model instead. Models
    declare their needs (``needs_instance_features``, ``attach_instance_extractor``) and
    never import this layer."""
    inst = instance_settings(cfg.model)
    if inst is None:
        return None, None
    if inst.features == "online" and hasattr(model, "attach_instance_extractor"):
        from .online import build_online_detector
        weights = None
        if getattr(cfg, "detector", None) is not None:  # the row's trained detector
            done = _PREPARED.get(detector_key(cfg))
            if not done:
                raise RuntimeError("this row's detector block has not been prepared; call "
                                   "gmbench.instances.source.prepare(cfg, root) first")
            weights = done["weights"]
        model.attach_instance_extractor(build_online_detector(inst, weights))
        return None, None
    if not getattr(model, "needs_instance_features", False):
        return None, None
    if inst.features == "views":
        from .views import open_views
        caches = open_views(cfg, root)
        if hasattr(model, "record"):
            model.record["instance_caches"] = [str(c.root) for c in caches]
        return caches
    from .cache import open_cache
    caches = []
    for split, path in cache_paths(cfg, root):
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(
                f"{cfg.model.name} (model.features=cache) needs the instance cache {path} for "
                f"split {split!r}; run `python -m gmbench extract --split {split} --source "
                f"{inst.source} --top-m {inst.top_m}`, set model.cache_train/model.cache_test, "
                f"or use model.features=online or e2e")
        caches.append(open_cache(path))
    if len(caches) != 2:  # no root and no explicit folders: nothing to open
        raise FileNotFoundError(f"{cfg.model.name} (model.features=cache) cannot locate its instance "
                                f"caches: set data.root, data.cache_dir or model.cache_train/cache_test")
    if hasattr(model, "record"):
        model.record["instance_caches"] = [str(c.root) for c in caches]
    return caches[0], caches[1]


def describe(cfg, model=None) -> Dict[str, object]:
    """The protocol block of a run record (schema: docs/architecture.md, "Records"):
    ``test_annotations_used``, ``instance_source`` (none | annotation_boxes | detector),
    ``detector`` (weights, sha256, trained_on, overlaps_test, note), ``extra_supervision``."""
    d, inst = cfg.data, instance_settings(cfg.model)
    if inst is not None and inst.reads_detector:
        if getattr(cfg, "detector", None) is not None:  # cache or online: the row's own detector
            key = detector_key(cfg)
            det = provenance.trained_detector(cfg, key, _PREPARED.get(key, {}))
        elif inst.features == "views":
            det = provenance.public_detector(cfg, provenance.manifest_settings(
                [p for _, p, _ in _views_paths(cfg)][1:]) or provenance.online_weights(inst, None))
        elif inst.features == "online":
            det = provenance.public_detector(cfg, provenance.online_weights(inst, model))
        else:
            det = provenance.public_detector(cfg, provenance.manifest_settings(
                _test_cache_candidates(cfg, model, inst)))
        sup = None
        if det["trained_on"]:
            sup = f"box annotations of {', '.join(det['trained_on'])} (detector training)"
        # instances are detections, not annotations; a detector trained on test images is
        # flagged by detector.overlaps_test (a separate table note)
        out = {"test_annotations_used": False,
               "instance_source": "detector", "detector": det, "extra_supervision": sup}
        if inst.features == "views":  # K cached augmented views per training image
            out.update(features="views", views=inst.views, view_seed=inst.view_seed)
        return out
    if (inst is not None and inst.reads_annotation_boxes) or getattr(model, "needs_boxes", False):
        return {"test_annotations_used": True, "instance_source": "annotation_boxes", "detector": None,
                "extra_supervision": f"box annotations of {d.name}/{d.train_split} (as instances)"}
    return {"test_annotations_used": False, "instance_source": "none", "detector": None,
            "extra_supervision": None}


def _test_cache_candidates(cfg, model, inst: InstanceSettings) -> List[Path]:
    """Where the test split's detector cache may be: the one the built model opened, the
    explicit ``model.cache_test``, the default place."""
    paths = []
    if model is not None and getattr(model, "record", None):
        paths += [Path(p) for p in model.record.get("instance_caches", [])[1:2]]
    if inst.cache_test:
        paths.append(Path(inst.cache_test).expanduser())
    base = data_cache_dir(cfg.data, cfg.data.root)
    if base is not None:
        paths.append(cache_dir(base, cfg.data.test_split, "detector", inst.top_m))
    return paths


def _views_paths(cfg):
    from .views import cache_paths as views_cache_paths
    return views_cache_paths(cfg, cfg.data.root)


def views_key(cfg) -> Optional[str]:
    """Claim key of a views row's extraction stage (None for other rows): the hash of the
    settings that name its caches (data, instance settings, detector block)."""
    inst = instance_settings(cfg.model)
    if inst is None or inst.features != "views":
        return None
    det = getattr(cfg, "detector", None)
    return config_digest({"data": cfg.data.model_dump(mode="json"), "instances": inst.__dict__,
                          "detector": None if det is None else det.model_dump(mode="json")})


def views_step(cfg, root, n_train=None, n_test=None) -> Optional[str]:
    """The dry run's line for a views row's extraction step (None for other rows)."""
    from .views import step
    return step(cfg, root, n_train, n_test)
