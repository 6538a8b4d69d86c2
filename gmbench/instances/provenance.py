"""Who made a run's detector instances and on what: the ``detector`` entry of the record's
``protocol`` block (weights identity, sha256, training set, overlap with the test split).

Pure functions of the config, the instance settings and (when found) a cache manifest or the
attached online detector's settings; ``gmbench/instances/source.py`` calls them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

COCO_V1 = "torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1"
# torchvision's COCO_V1 detector was trained on COCO train2017, which is COCO 2014's
# train + val minus the 5k val2017 images: it holds about 35.5k of the 40,504 val2014
# images (docs/instances.md, "Detector provenance").
COCO_V1_TRAINED_ON = ["coco/train2017"]
# Test splits the public checkpoint's training set overlaps, per dataset.
_COCO_V1_OVERLAPS = {"coco2014": True, "synthetic": False}


def manifest_settings(paths) -> Optional[dict]:
    """The ``settings`` of the first instance cache among ``paths`` whose manifest exists."""
    for p in paths:
        man = Path(p) / "manifest.json"
        if man.is_file():
            try:
                return json.loads(man.read_text(encoding="utf-8")).get("settings") or {}
            except (OSError, json.JSONDecodeError):
                return None
    return None


def trained_detector(cfg, key: str, done: dict) -> dict:
    """A detector the runner trains from the row's ``detector`` block (``done``: what
    :func:`gmbench.instances.source.prepare` recorded for ``key``, empty before it ran)."""
    d = cfg.data
    return {"weights": done.get("weights", f"gmbench detector train (runner; config {key})"),
            "sha256": done.get("sha256"), "trained_on": [f"{d.name}/{d.train_split}"],
            "overlaps_test": d.train_split == d.test_split,
            "note": f"{cfg.detector.arch} Faster R-CNN trained by the runner on the box annotations "
                    f"of {d.name}/{d.train_split} only; {d.test_split} annotations are used only "
                    f"by the metrics"}


def public_detector(cfg, settings: Optional[dict]) -> dict:
    """A detector named by the instance cache's or online detector's settings (or, when none
    is found, the `gmbench extract` default, said to be assumed)."""
    d = cfg.data
    ident = (settings or {}).get("weights")
    assumed = ident is None
    ident = ident or COCO_V1
    if ident.startswith("torchvision:"):
        overlap = _COCO_V1_OVERLAPS.get(d.name)
        note = ("torchvision's public COCO_V1 checkpoint, trained on COCO train2017 "
                + {True: f"(which holds most {d.name} {d.test_split} images: test leakage; train "
                         f"a detector on the training split instead, docs/instances.md)",
                   False: "(no overlap with these images)",
                   None: f"(overlap with {d.name}/{d.test_split} unknown)"}[overlap])
        out = {"weights": ident, "sha256": None, "trained_on": list(COCO_V1_TRAINED_ON),
               "overlaps_test": overlap, "note": note}
    elif ident.startswith("random-init"):
        out = {"weights": ident, "sha256": None, "trained_on": [], "overlaps_test": False,
               "note": "randomly initialised detector (tests only)"}
    else:  # file:NAME#sha256:DIGEST (+ trained_on from a gmbench detector file's header)
        name, _, digest = ident.removeprefix("file:").partition("#sha256:")
        t = (settings or {}).get("trained_on") or {}
        on = [f"{t['dataset']}/{t['split']}"] if t.get("dataset") else []
        overlap = None
        if t.get("dataset"):
            overlap = t["dataset"] == d.name and t["split"] == d.test_split
        out = {"weights": name, "sha256": digest or None, "trained_on": on, "overlaps_test": overlap,
               "note": "detector weights file" + (f" trained on {on[0]}" if on else
                                                  " without a gmbench header (training set unknown)")}
    if assumed:
        out["note"] += ("; assumed: the instance cache was not found, and `gmbench extract` uses "
                        "this checkpoint by default")
    return out


def online_weights(inst, model) -> dict:
    """Online mode: the attached detector's settings (a built run), else the weights the
    config names, as the ``weights`` identity a cache would carry."""
    ext = getattr(model, "_extractor", None) if model is not None else None
    if ext is not None and hasattr(ext, "settings"):
        return ext.settings
    w = inst.detector_weights
    if w == "coco":
        return {"weights": COCO_V1}
    if w == "none":
        return {"weights": f"random-init:seed={inst.detector_seed}"}
    return {"weights": f"file:{Path(w).expanduser()}"}  # digest and header: known once built
