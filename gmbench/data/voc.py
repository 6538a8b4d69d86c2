"""PASCAL VOC 2007 from its official ``VOCdevkit`` layout.

Labels come from the per-class files ``ImageSets/Main/<class>_<split>.txt``
(1 present, -1 absent, 0 "only difficult objects" → stored as -1 = ignored);
boxes and image sizes come from ``Annotations/<id>.xml``.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

import numpy as np

from gmbench.data.base import AnnotationError, DataConfig, DatasetSpec, LabelSet, fix_hint
from gmbench.registry import register_dataset

# The standard VOC class order (alphabetical); every VOC paper reports AP in it.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

VOC_GET = ("download VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar again and "
           "extract both into one folder")
VOC_LAYOUT = """\
ROOT/                          (or ROOT may be VOCdevkit/ or VOC2007/ itself)
  VOCdevkit/VOC2007/
    Annotations/000005.xml ...          (trainval and test archives extracted together)
    ImageSets/Main/trainval.txt, test.txt
    ImageSets/Main/<class>_trainval.txt, <class>_test.txt   (20 classes; 1 / -1 / 0)
    JPEGImages/000005.jpg ..."""


class VOCConfig(DataConfig):
    name: Literal["voc2007"] = "voc2007"
    train_split: str = "trainval"
    test_split: str = "test"
    # Parse Annotations/*.xml for boxes/sizes (needed by the 'boxes' instance source).
    read_boxes: bool = True


def resolve_voc_dir(root: Path) -> Path:
    """Accept ROOT, ROOT/VOCdevkit or ROOT/VOCdevkit/VOC2007 as the data root."""
    root = Path(root).expanduser()
    for cand in (root / "VOCdevkit" / "VOC2007", root / "VOC2007", root):
        if (cand / "ImageSets" / "Main").is_dir():
            return cand
    raise FileNotFoundError(
        f"no VOC 2007 devkit under {root} (looked for VOCdevkit/VOC2007/ImageSets/Main). "
        f"Expected layout:\n{VOC_LAYOUT}")


def _text(path: Path, fix: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = e.object.count(b"\n", 0, e.start) + 1
        raise AnnotationError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} on "
                              f"line {line}). {fix}") from None


def _read_id_list(path: Path, fix: str) -> List[str]:
    if not path.is_file():
        raise FileNotFoundError(f"missing VOC image list {path}. Expected layout:\n{VOC_LAYOUT}")
    ids = [ln.split()[0] for ln in _text(path, fix).splitlines() if ln.strip()]
    if len(set(ids)) != len(ids):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise AnnotationError(f"{path}: image {twice!r} is listed twice. {fix}")
    return ids


def _read_class_file(path: Path, ids: List[str], fix: str) -> np.ndarray:
    """int8 [N] for one class, aligned with ``ids``; official 0 (difficult only) → -1."""
    if not path.is_file():
        raise FileNotFoundError(f"missing VOC per-class label file {path}. "
                                f"Expected layout:\n{VOC_LAYOUT}")
    where: Dict[str, int] = {i: k for k, i in enumerate(ids)}
    col = np.full(len(ids), 2, dtype=np.int8)  # 2 = not seen yet
    for lineno, line in enumerate(_text(path, fix).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("1", "-1", "0"):
            raise AnnotationError(f"{path}:{lineno}: expected '<image id> <1|-1|0>', got "
                                  f"{line!r}. {fix}")
        k = where.get(parts[0])
        if k is None:
            raise AnnotationError(f"{path}:{lineno}: image {parts[0]!r} is not in the split's "
                                  f"image list; the devkit files are from different releases. {fix}")
        col[k] = {"1": 1, "-1": 0, "0": -1}[parts[1]]
    if (col == 2).any():
        missing = [ids[k] for k in np.flatnonzero(col == 2)[:5]]
        raise AnnotationError(f"{path}: no label for image(s) {missing}"
                              f"{' ...' if (col == 2).sum() > 5 else ''}. {fix}")
    return col


def _number(path: Path, el, tag: str, where: str, fix: str) -> float:
    text = el.findtext(tag)
    if text is None:
        raise AnnotationError(f"{path}: {where} has no <{tag}>. {fix}")
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not math.isfinite(v):
        raise AnnotationError(f"{path}: {where}: <{tag}> is {text.strip()!r}, not a number. {fix}")
    return v


def read_voc_xml(path: Path, class_index: Dict[str, int], fix: Optional[str] = None
                 ) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int]]:
    """Boxes float32 [k, 4] (x1, y1, x2, y2; VOC's 1-based pixels kept), labels int64 [k],
    and (width, height). Difficult objects are kept: they are real objects of that class.
    A malformed file is an AnnotationError naming it, the object and the tag."""
    fix = fix or fix_hint("voc2007", path.parent.parent, VOC_GET)
    if not path.is_file():
        raise FileNotFoundError(f"missing VOC annotation {path}; extract the Annotations of "
                                f"both VOC 2007 archives, or set data.read_boxes=false")
    try:
        tree = ET.parse(str(path)).getroot()
    except ET.ParseError as e:  # also bytes that are not in the declared encoding
        raise AnnotationError(f"{path}: not valid XML ({e}). {fix}") from None
    size = tree.find("size")
    wh = (0, 0)
    if size is not None:
        wh = (int(_number(path, size, "width", "<size>", fix)),
              int(_number(path, size, "height", "<size>", fix)))
    boxes, labels = [], []
    for n, obj in enumerate(tree.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise AnnotationError(f"{path}: <object> {n} has no <name>. {fix}")
        if name not in class_index:
            raise AnnotationError(f"{path}: <object> {n} has unknown class {name!r}; "
                                  f"valid: {', '.join(VOC_CLASSES)}. {fix}")
        where = f"<object> {n} ({name})"
        bb = obj.find("bndbox")
        if bb is None:
            raise AnnotationError(f"{path}: {where} has no <bndbox>. {fix}")
        boxes.append([_number(path, bb, k, f"{where} <bndbox>", fix)
                      for k in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(class_index[name])
    return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            np.asarray(labels, dtype=np.int64), wh)


@register_dataset("voc2007", config=VOCConfig)
class VOC2007(DatasetSpec):
    """PASCAL VOC 2007; image id = 6-digit stem, e.g. "000005"."""
    name = "voc2007"
    splits = ("trainval", "test", "train", "val")
    expected_counts = {"trainval": 5011, "test": 4952, "train": 2501, "val": 2510}
    layout = VOC_LAYOUT

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"voc2007 has no split {split!r}; valid: {', '.join(self.splits)}")

    def expected_files(self, root: Path, split: str, cfg: DataConfig) -> List[Path]:
        self._check_split(split)
        try:
            base = resolve_voc_dir(root)
        except FileNotFoundError:
            base = Path(root) / "VOCdevkit" / "VOC2007"
        main = base / "ImageSets" / "Main"
        return [main / f"{split}.txt"] + [main / f"{c}_{split}.txt" for c in VOC_CLASSES]

    def read_labels(self, root: Path, split: str, cfg: DataConfig) -> LabelSet:
        self._check_split(split)
        base = resolve_voc_dir(root)
        fix = fix_hint("voc2007", root, VOC_GET)
        main = base / "ImageSets" / "Main"
        ids = _read_id_list(main / f"{split}.txt", fix)
        targets = np.stack([_read_class_file(main / f"{c}_{split}.txt", ids, fix)
                            for c in VOC_CLASSES], axis=1) if ids else \
            np.zeros((0, len(VOC_CLASSES)), np.int8)
        paths = [base / "JPEGImages" / f"{i}.jpg" for i in ids]
        labels = LabelSet(image_ids=ids, class_names=list(VOC_CLASSES), targets=targets,
                          image_paths=paths)
        if getattr(cfg, "read_boxes", True):
            index = {c: k for k, c in enumerate(VOC_CLASSES)}
            xml = [base / "Annotations" / f"{i}.xml" for i in ids]
            lost = next((i for i, p in zip(ids, xml) if not p.is_file()), None)
            if lost is not None:  # a mismatch of the two archives, or Annotations not extracted
                raise AnnotationError(
                    f"{main / f'{split}.txt'} lists image {lost!r}, but {base / 'Annotations'} "
                    f"has no {lost}.xml. Extract the Annotations of both VOC 2007 archives "
                    f"(trainval and test) into one folder, or set data.read_boxes=false")
            parsed = [read_voc_xml(p, index, fix) for p in xml]
            labels.boxes = [p[0] for p in parsed]
            labels.box_labels = [p[1] for p in parsed]
            labels.sizes = np.asarray([p[2] for p in parsed], dtype=np.int64).reshape(-1, 2)
        return labels
