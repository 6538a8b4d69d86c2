"""MS-COCO 2014 (and any COCO-format annotation JSON, e.g. the synthetic set).

Layout::

    ROOT/annotations/instances_train2014.json
    ROOT/annotations/instances_val2014.json
    ROOT/train2014/COCO_train2014_000000000009.jpg ...
    ROOT/val2014/...
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Literal, Optional

import numpy as np

from ..registry import register_dataset
from .base import AnnotationError, DataConfig, DatasetSpec, LabelSet, fix_hint


COCO_GET = "download annotations_trainval2014.zip again from cocodataset.org and extract it"
_INF = float("inf")
_NUMBER_TYPES = frozenset((int, float))  # not bool: True is no coordinate
# (key, what it must be) per entry; the reader's fast path checks the same things inline
_FIELDS = {"images": (("id", "int"), ("file_name", "str"), ("width", "int"), ("height", "int")),
           "annotations": (("image_id", "int"), ("category_id", "int"), ("bbox", "box")),
           "categories": (("id", "int"), ("name", "str"))}
_KIND = {"int": "an integer", "str": "a string", "box": "a list of 4 numbers [x, y, w, h]"}


def _number(v) -> bool:
    return type(v) in (int, float) and -_INF < v < _INF  # bool, NaN and inf are not


def _fits(kind: str, v) -> bool:
    if kind == "int":
        return type(v) is int
    if kind == "str":
        return isinstance(v, str)
    return type(v) is list and len(v) == 4 and all(_number(x) for x in v)


def _bad_entry(path: Path, section: str, j: int, entry, fix: str) -> AnnotationError:
    """The precise complaint about ``doc[section][j]``, which failed the fast check."""
    if not isinstance(entry, dict):
        return AnnotationError(f"{path}: {section}[{j}] = {entry!r} is not an object. {fix}")
    where = f"{section}[{j}]" + (f" (id {entry['id']!r})" if "id" in entry else "")
    for key, kind in _FIELDS[section]:
        if key not in entry:
            return AnnotationError(f"{path}: {where} has no key {key!r}. {fix}")
        if not _fits(kind, entry[key]):
            return AnnotationError(f"{path}: {where}: {key} = {entry[key]!r} is not "
                                   f"{_KIND[kind]}. {fix}")
    raise AssertionError(f"{where} passed every check")  # the fast path and _FIELDS disagree


def _load_json(path: Path, fix: str):
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file {path} not found") from None
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise AnnotationError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} on line "
                              f"{line}). {fix}") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column "
                              f"{e.colno}). {fix}") from None
    if not isinstance(doc, dict):
        raise AnnotationError(f"{path}: the top level is a {type(doc).__name__}, not an object "
                              f"with images, annotations and categories. {fix}")
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            raise AnnotationError(f"{path}: missing top-level key {key!r}; is this an "
                                  f"instances_*.json file? {fix}")
        if not isinstance(doc[key], list):
            raise AnnotationError(f"{path}: top-level {key!r} is a {type(doc[key]).__name__}, "
                                  f"not a list. {fix}")
    return doc


def _index(path: Path, section: str, entries: list, fix: str) -> Dict[int, int]:
    """id → position, after checking every entry of ``images`` or ``categories``."""
    ids: Dict[int, int] = {}
    for j, e in enumerate(entries):
        if not (isinstance(e, dict) and all(k in e and _fits(kind, e[k]) for k, kind in _FIELDS[section])):
            raise _bad_entry(path, section, j, e, fix)
        if e["id"] in ids:
            raise AnnotationError(f"{path}: {section}[{j}]: id {e['id']} is also the id of "
                                  f"{section}[{ids[e['id']]}]. {fix}")
        ids[e["id"]] = j
    return ids


def read_coco_annotations(json_path, image_dir, class_order: str = "id",
                          keep_empty: bool = False, fix: Optional[str] = None) -> LabelSet:
    """Parse a COCO ``instances_*.json`` into image-level labels plus boxes.

    class_order: "id" (ascending category id) or "name" (alphabetical, as ML-GCN).
    keep_empty:  keep images with no annotation as all-absent rows (default: drop).
    fix:         what an AnnotationError tells the user to do (default: COCO's download).
    Image ids are the numeric COCO ids as decimal strings, in ascending id order.
    Every entry is checked; a malformed one is an AnnotationError naming the file, the
    entry (section, position, id), the key and the value.
    """
    if class_order not in ("id", "name"):
        raise ValueError(f"class_order must be 'id' or 'name', got {class_order!r}")
    json_path = Path(json_path)
    fix = fix or fix_hint("coco2014", json_path.parent.parent, COCO_GET)
    doc = _load_json(json_path, fix)
    _index(json_path, "categories", doc["categories"], fix)
    _index(json_path, "images", doc["images"], fix)
    cats = sorted(doc["categories"], key=(lambda c: c["id"]) if class_order == "id"
                  else (lambda c: c["name"]))
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    images = sorted(doc["images"], key=lambda im: im["id"])
    row = {im["id"]: i for i, im in enumerate(images)}

    n, c = len(images), len(cats)
    anns = doc["annotations"]
    rows, ks, raw = [], [], []
    for j, ann in enumerate(anns):
        try:  # inline for speed (600k annotations in train2014); finiteness is checked below
            iid, cid, bb = ann["image_id"], ann["category_id"], ann["bbox"]
            ok = type(iid) is int and type(cid) is int and type(bb) is list and len(bb) == 4 \
                and _NUMBER_TYPES.issuperset(map(type, bb))
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise _bad_entry(json_path, "annotations", j, ann, fix)
        i, k = row.get(iid), cat_index.get(cid)
        if i is None or k is None:
            what = f"image_id {iid} is the id of no image" if i is None else \
                f"category_id {cid} is the id of no category"
            raise AnnotationError(f"{json_path}: annotations[{j}] (id {ann.get('id')!r}): "
                                  f"{what}. {fix}")
        rows.append(i)
        ks.append(k)
        raw.append(bb)
    xywh = np.asarray(raw, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(xywh).all(axis=1)
    if not finite.all():
        j = int(np.flatnonzero(~finite)[0])
        raise _bad_entry(json_path, "annotations", j, anns[j], fix)
    rows_a, ks_a = np.asarray(rows, dtype=np.int64), np.asarray(ks, dtype=np.int64)
    targets = np.zeros((n, c), dtype=np.int8)
    targets[rows_a, ks_a] = 1
    # per image, its boxes in file order: a stable sort by image row, then split
    order = np.argsort(rows_a, kind="stable")
    cuts = np.cumsum(np.bincount(rows_a, minlength=n))[:-1]
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
    boxes = np.split(xyxy[order], cuts)
    labels = np.split(ks_a[order], cuts)

    keep = np.arange(n) if keep_empty else np.flatnonzero(targets.max(axis=1) > 0)
    image_dir = Path(image_dir)
    return LabelSet(
        image_ids=[str(images[i]["id"]) for i in keep],
        class_names=[str(c["name"]) for c in cats],
        targets=targets[keep],
        image_paths=[image_dir / images[i]["file_name"] for i in keep],
        boxes=[boxes[i] for i in keep],
        box_labels=[labels[i] for i in keep],
        sizes=np.asarray([[images[i]["width"], images[i]["height"]] for i in keep],
                         dtype=np.int64).reshape(-1, 2),
    )


# --- coco2014: the dataset plug-in around read_coco_annotations -----------------------------

COCO_LAYOUT = """\
ROOT/
  annotations/instances_train2014.json, instances_val2014.json
  train2014/COCO_train2014_000000000009.jpg ...
  val2014/COCO_val2014_000000000042.jpg ..."""


class COCOConfig(DataConfig):
    name: Literal["coco2014"] = "coco2014"
    train_split: str = "train"
    test_split: str = "val"
    # "id": ascending category id (1..90 with gaps); "name": alphabetical, as ML-GCN.
    class_order: Literal["id", "name"] = "id"
    # False drops images with no annotation (82,081 / 40,137, the paper's counts);
    # True keeps them as all-absent rows (82,783 / 40,504).
    keep_empty: bool = False


@register_dataset("coco2014", config=COCOConfig)
class COCO2014(DatasetSpec):
    """MS-COCO 2014; image id = numeric COCO id as a decimal string."""
    name = "coco2014"
    splits = ("train", "val")
    expected_counts = {"train": 82081, "val": 40137}
    layout = COCO_LAYOUT

    def expected_counts_for(self, cfg: DataConfig) -> Dict[str, int]:
        if getattr(cfg, "keep_empty", False):
            return {"train": 82783, "val": 40504}
        return dict(self.expected_counts)

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"coco2014 has no split {split!r}; valid: train, val")

    def expected_files(self, root: Path, split: str, cfg: DataConfig) -> List[Path]:
        self._check_split(split)
        return [Path(root).expanduser() / "annotations" / f"instances_{split}2014.json"]

    def read_labels(self, root: Path, split: str, cfg: DataConfig) -> LabelSet:
        self._check_split(split)
        root = Path(root).expanduser()
        json_path = root / "annotations" / f"instances_{split}2014.json"
        if not json_path.is_file():
            raise FileNotFoundError(f"missing COCO annotation file {json_path}. "
                                    f"Expected layout:\n{COCO_LAYOUT}")
        return read_coco_annotations(json_path, root / f"{split}2014",
                                     class_order=getattr(cfg, "class_order", "id"),
                                     keep_empty=getattr(cfg, "keep_empty", False))
