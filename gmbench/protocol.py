"""What a run saw: the ``protocol`` block of every run record.

``describe_protocol(cfg, model)`` answers, from the resolved config (and, when a
run has built it, the model and its instance caches):

* ``test_annotations_used``: is any test-time input derived from test-split
  annotations (annotation boxes as instances, their labels or scores)?
* ``instance_source``: ``none`` | ``annotation_boxes`` | ``detector``;
* ``detector``: for detector instances, the weights' identity, what they were
  trained on, and whether that training set overlaps the test split;
* ``extra_supervision``: annotations beyond image labels used for training.

It never trains or extracts anything, so a suite's records can be checked from
its plan alone (``model=None``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

COCO_V1 = "torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1"
# torchvision's COCO_V1 detector was trained on COCO train2017, which is COCO 2014's
# train + val minus the 5k val2017 images: it holds about 35.5k of the 40,504 val2014
# images (docs/instances.md, "Provenance and leakage").
COCO_V1_TRAINED_ON = ["coco/train2017"]
# Test splits the public checkpoint's training set overlaps, per dataset.
_COCO_V1_OVERLAPS = {"coco2014": True, "synthetic": False}

# Detectors the runner trained in this process (gmbench.detector.suite.ensure_instances):
# key → {"weights": path, "sha256": digest}.
TRAINED: Dict[str, Dict[str, Any]] = {}


def _data_cache(cfg) -> Optional[Path]:
    d = cfg.data
    if d.cache_dir:
        return Path(d.cache_dir).expanduser()
    return Path(d.root).expanduser() / ".gmbench" if d.root else None


def _cache_weights(cfg, model) -> Optional[dict]:
    """The ``settings`` of the test split's detector cache, when it can be found on disk."""
    m = cfg.model
    paths = []
    if model is not None and getattr(model, "record", None):
        paths += [Path(p) for p in model.record.get("instance_caches", [])[1:2]]
    if getattr(m, "cache_test", None):
        paths.append(Path(m.cache_test).expanduser())
    base = _data_cache(cfg)
    if base is not None:
        from .instances import default_cache_dir
        paths.append(default_cache_dir(base, cfg.data.test_split, "detector", m.top_m))
    for p in paths:
        man = p / "manifest.json"
        if man.is_file():
            try:
                return json.loads(man.read_text(encoding="utf-8")).get("settings") or {}
            except (OSError, json.JSONDecodeError):
                return None
    return None


def _trained_detector(cfg) -> dict:
    """A detector the runner trains from the row's ``detector`` block."""
    from .detector.suite import detector_key
    d = cfg.data
    key = detector_key(cfg)
    done = TRAINED.get(key, {})
    return {"weights": done.get("weights", f"gmbench detector train (runner; config {key})"),
            "sha256": done.get("sha256"), "trained_on": [f"{d.name}/{d.train_split}"],
            "overlaps_test": d.train_split == d.test_split,
            "note": f"{cfg.detector.arch} Faster R-CNN trained by the runner on the box annotations "
                    f"of {d.name}/{d.train_split} only; {d.test_split} annotations are used only "
                    f"by the metrics"}


def _public_detector(cfg, settings: Optional[dict]) -> dict:
    """A detector named by the instance cache (or the `gmbench extract` default)."""
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


def _online_weights(cfg, model) -> Optional[dict]:
    """Online mode: the attached detector's settings (a built run), else the weights the
    config names, as the ``weights`` identity a cache would carry."""
    ext = getattr(model, "_extractor", None) if model is not None else None
    if ext is not None and hasattr(ext, "settings"):
        return ext.settings
    w = cfg.model.detector_weights
    if w == "coco":
        return {"weights": COCO_V1}
    if w == "none":
        return {"weights": f"random-init:seed={cfg.model.detector_seed}"}
    return {"weights": f"file:{Path(w).expanduser()}"}  # digest and header: known once built


def describe_protocol(cfg, model=None) -> Dict[str, Any]:
    """The protocol block of a run record (schema: docs/architecture.md, "Records")."""
    m, d = cfg.model, cfg.data
    features = getattr(m, "features", None)
    needs_boxes = getattr(model, "needs_boxes", features is not None)
    online = features == "online"
    if online or (features == "cache" and getattr(m, "instance_source", None) == "detector"):
        if online:
            det = _public_detector(cfg, _online_weights(cfg, model))
        elif getattr(cfg, "detector", None) is not None:
            det = _trained_detector(cfg)
        else:
            det = _public_detector(cfg, _cache_weights(cfg, model))
        sup = None
        if det["trained_on"]:
            sup = f"box annotations of {', '.join(det['trained_on'])} (detector training)"
        # instances are detections, not annotations; a detector trained on test images is
        # flagged by detector.overlaps_test (a separate table note)
        return {"test_annotations_used": False,
                "instance_source": "detector", "detector": det, "extra_supervision": sup}
    if needs_boxes or features == "cache":  # annotation boxes, directly or via an extracted cache
        return {"test_annotations_used": True, "instance_source": "annotation_boxes", "detector": None,
                "extra_supervision": f"box annotations of {d.name}/{d.train_split} (as instances)"}
    return {"test_annotations_used": False, "instance_source": "none", "detector": None,
            "extra_supervision": None}


def spread_note(records, metric: str = "mAP") -> str:
    """Which row differences in ``metric`` exceed their spread (markdown lines).

    A difference between two rows' means counts as exceeding the spread when it is larger
    than the sum of the two sample standard deviations over seeds (ddof 1, as the tables);
    rows with fewer than 2 finished seeds are left out.  A coarse, assumption-free
    rule, not a significance test: with 3 seeds a t-test has little power anyway.
    """
    import numpy as np
    vals: Dict[str, list] = {}
    for r in records:
        if r.get("status") == "finished" and metric in r.get("metrics", {}):
            vals.setdefault(r["row"], []).append(100 * float(r["metrics"][metric]))
    stats = {k: (float(np.mean(v)), float(np.std(v, ddof=1)), len(v))
             for k, v in vals.items() if len(v) >= 2}
    rows = sorted(stats, key=lambda k: -stats[k][0])
    out, within = [], []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            (ma, sa, _), (mb, sb, _) = stats[a], stats[b]
            line = f"{a} − {b}: {ma - mb:+.1f} (spread {sa + sb:.1f})"
            (out if ma - mb > sa + sb else within).append(line)
    if not rows:
        return ""
    n = sorted({s[2] for s in stats.values()})
    head = (f"{metric}: differences larger than the sum of the two rows' std over "
            f"{'/'.join(map(str, n))} seeds:")
    return "\n".join([head] + [f"- {x}" for x in out or ["none"]]
                     + ["Within the spread:"] + [f"- {x}" for x in within or ["none"]])
