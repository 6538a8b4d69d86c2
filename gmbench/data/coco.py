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
from typing import Dict, List, Literal

import numpy as np

from ..registry import register_dataset
from .base import DataConfig, DatasetSpec, LabelSet


def read_coco_annotations(json_path, image_dir, class_order: str = "id",
                          keep_empty: bool = False) -> LabelSet:
    """Parse a COCO ``instances_*.json`` into image-level labels plus boxes.

    class_order: "id" (ascending category id) or "name" (alphabetical, as ML-GCN).
    keep_empty:  keep images with no annotation as all-absent rows (default: drop).
    Image ids are the numeric COCO ids as decimal strings, in ascending id order.
    """
    json_path = Path(json_path)
    try:
        with open(json_path, "r", encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file {json_path} not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            raise ValueError(f"{json_path}: missing top-level key {key!r}; is this an "
                             f"instances_*.json file?")
    cats = list(doc["categories"])
    if class_order == "id":
        cats.sort(key=lambda c: int(c["id"]))
    elif class_order == "name":
        cats.sort(key=lambda c: str(c["name"]))
    else:
        raise ValueError(f"class_order must be 'id' or 'name', got {class_order!r}")
    cat_index = {int(c["id"]): i for i, c in enumerate(cats)}
    images = sorted(doc["images"], key=lambda im: int(im["id"]))
    row = {int(im["id"]): i for i, im in enumerate(images)}

    n, c = len(images), len(cats)
    targets = np.zeros((n, c), dtype=np.int8)
    boxes: List[list] = [[] for _ in range(n)]
    labels: List[list] = [[] for _ in range(n)]
    for ann in doc["annotations"]:
        i = row.get(int(ann["image_id"]))
        k = cat_index.get(int(ann["category_id"]))
        if i is None or k is None:
            raise ValueError(f"{json_path}: annotation {ann.get('id')} refers to unknown "
                             f"image {ann['image_id']} or category {ann['category_id']}")
        targets[i, k] = 1
        x, y, w, h = (float(v) for v in ann["bbox"])
        boxes[i].append((x, y, x + w, y + h))
        labels[i].append(k)

    keep = np.arange(n) if keep_empty else np.flatnonzero(targets.max(axis=1) > 0)
    image_dir = Path(image_dir)
    return LabelSet(
        image_ids=[str(images[i]["id"]) for i in keep],
        class_names=[str(c["name"]) for c in cats],
        targets=targets[keep],
        image_paths=[image_dir / images[i]["file_name"] for i in keep],
        boxes=[np.asarray(boxes[i], dtype=np.float32).reshape(-1, 4) for i in keep],
        box_labels=[np.asarray(labels[i], dtype=np.int64) for i in keep],
        sizes=np.asarray([[int(images[i]["width"]), int(images[i]["height"])] for i in keep],
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
