"""The runner's hook: a row's ``detector:`` block → trained detector → instance caches.

``ensure_instances(cfg, root, log)`` is called by the runner before a run builds
its datasets.  For a row with a ``detector`` block it

1. trains the detector on the box annotations of ``data.train_split`` (only), in
   ``DATA_CACHE/detectors/<key>/`` (key = hash of the detector and data configs),
   or finds it finished there (resuming an interrupted training);
2. extracts top-m instances of the train and test splits with it into the
   caches the model reads (``DATA_CACHE/instances/SPLIT-detector-mM``), unless
   caches made with these exact weights (sha256 in the cache identity) exist.

Done once per (data config, detector config) per process; reruns find the
weights and caches on disk and skip both steps.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Dict

from .config import config_digest

_DONE: Dict[str, dict] = {}


def detector_key(cfg) -> str:
    """Hash naming a (data config, detector config) pair: one detector per key."""
    return config_digest({"detector": cfg.detector.model_dump(mode="json"),
                          "data": cfg.data.model_dump(mode="json")})


def _data_cache(cfg, root: Path) -> Path:
    return Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else Path(root) / ".gmbench"


def ensure_instances(cfg, root, log: Callable[[str], None] = print) -> dict:
    """Train the row's detector and extract both splits' instances (no-op without a block).

    Returns {"weights", "sha256", "record", "caches", "seconds"} (empty dict when the
    row has no ``detector`` block).
    """
    if getattr(cfg, "detector", None) is None:
        return {}
    key = detector_key(cfg)
    if key in _DONE:
        return _DONE[key]
    from ..utils import dist
    if not dist.is_main():  # rank 0 trains and extracts; the others then read its record
        dist.barrier()
        rec_path = _data_cache(cfg, root) / "detectors" / key / "record.json"
        rec = json.loads(rec_path.read_text())
        _DONE[key] = {"weights": rec["weights"], "sha256": rec["sha256"], "record": str(rec_path)}
        return _DONE[key]
    try:
        _DONE[key] = _prepare(cfg, root, key, log)
    finally:
        dist.barrier()
    return _DONE[key]


def _prepare(cfg, root, key: str, log) -> dict:
    import torch

    from ..data import get_spec
    from ..instances import default_cache_dir
    from ..instances.extract import DetectorConfig, DetectorSource
    from ..instances.pipeline import make_plan, run_extraction
    from ..protocol import TRAINED
    from .train import train_detector
    t0 = time.perf_counter()
    dcfg, d = cfg.detector, cfg.data
    spec = get_spec(d.name)
    train = spec.read_labels(root, d.train_split, d)
    test = spec.read_labels(root, d.test_split, d)
    base = _data_cache(cfg, root)
    threads = torch.get_num_threads()
    try:
        if dcfg.num_threads:
            torch.set_num_threads(dcfg.num_threads)
        log(f"   detector {key}: {dcfg.arch} on {d.name}/{d.train_split} boxes "
            f"({base / 'detectors' / key})")
        rec = train_detector(dcfg, train, test, base / "detectors" / key, dataset=d.name,
                             train_split=d.train_split, test_split=d.test_split,
                             data_config=d.model_dump(mode="json"), log=lambda m: log("   " + m))
        weights = Path(rec["weights"])
        source = DetectorSource(DetectorConfig(weights=str(weights), score_thresh=dcfg.score_thresh),
                                cfg.model.top_m, torch.device("cpu"))
        caches = []
        for split, labels in ((d.train_split, train), (d.test_split, test)):
            out = default_cache_dir(base, split, "detector", cfg.model.top_m)
            plan = make_plan(source, labels, d.name, split, cfg.model.top_m, 512,
                             dcfg.extract_batch_size)
            old = out / "plan.json"
            stale = old.is_file() and json.loads(old.read_text()).get("identity") != plan["identity"]
            if stale:
                log(f"   {out} holds instances of other weights/settings; re-extracting")
            res = run_extraction(labels, out, source, dataset=d.name, split=split,
                                 top_m=cfg.model.top_m, shard_size=512,
                                 batch_size=dcfg.extract_batch_size, num_workers=0, overwrite=stale,
                                 log=lambda m: log("   " + m))
            if not res["complete"]:
                raise RuntimeError(f"extraction into {out} did not complete; rerun to continue")
            caches.append(str(out))
    finally:
        torch.set_num_threads(threads)
    ap = (rec.get("box_ap") or {}).get("AP50")
    info = {"weights": str(weights), "sha256": rec["sha256"], "record": str(weights.parent / "record.json"),
            "caches": caches, "box_AP50": ap, "seconds": round(time.perf_counter() - t0, 2)}
    log(f"   detector ready in {info['seconds']:.0f}s (box AP@0.5 on {d.test_split}: "
        f"{'n/a' if ap is None else f'{100 * ap:.1f}'}); instances in {', '.join(caches)}")
    TRAINED[key] = {"weights": str(weights), "sha256": rec["sha256"]}
    return info
