"""Writers of tiny datasets in the exact official on-disk formats (for tests).

Each writer takes a folder (usually pytest's tmp_path) and returns the dataset root.
Label files are produced the way the official tools produce them, from object lists,
so the readers are tested against the format rather than against themselves.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

VOC20 = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
         "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep",
         "sofa", "train", "tvmonitor"]

# (class, difficult, (xmin, ymin, xmax, ymax))
VocObject = Tuple[str, bool, Tuple[int, int, int, int]]


def write_jpeg(path: Path, size: Tuple[int, int] = (48, 40), seed: int = 0,
               truncated: bool = False) -> Path:
    """A noisy RGB JPEG (noise keeps the entropy-coded part large, so a cut lands in it).
    truncated=True keeps only the first 60% of the bytes, as an interrupted download."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)
    if truncated:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def _voc_xml(image_id: str, size: Tuple[int, int], objects: Sequence[VocObject]) -> str:
    objs = "".join(
        f"\t<object>\n\t\t<name>{c}</name>\n\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>0</truncated>\n\t\t<difficult>{int(d)}</difficult>\n"
        f"\t\t<bndbox>\n\t\t\t<xmin>{b[0]}</xmin>\n\t\t\t<ymin>{b[1]}</ymin>\n"
        f"\t\t\t<xmax>{b[2]}</xmax>\n\t\t\t<ymax>{b[3]}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for c, d, b in objects)
    return (f"<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{image_id}.jpg</filename>\n"
            f"\t<source>\n\t\t<database>The VOC2007 Database</database>\n\t</source>\n"
            f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n"
            f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{objs}</annotation>\n")


def write_voc(base: Path, splits: Dict[str, Dict[str, List[VocObject]]],
              missing_jpeg: Iterable[str] = (), truncated_jpeg: Iterable[str] = (),
              size: Tuple[int, int] = (48, 40)) -> Path:
    """VOCdevkit/VOC2007 under ``base``; returns ``base`` (the data root).

    Per-class files follow the devkit rule: 1 if the image has a non-difficult object of
    the class, 0 if it has only difficult ones, -1 otherwise, written as "%s %2d".
    """
    voc = base / "VOCdevkit" / "VOC2007"
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    missing_jpeg, truncated_jpeg = set(missing_jpeg), set(truncated_jpeg)
    for split, images in splits.items():
        ids = sorted(images)
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for cls in VOC20:
            rows = []
            for i in ids:
                objs = [o for o in images[i] if o[0] == cls]
                lab = 1 if any(not d for _, d, _ in objs) else (0 if objs else -1)
                rows.append(f"{i} {lab:2d}\n")
            (main / f"{cls}_{split}.txt").write_text("".join(rows))
        for k, i in enumerate(ids):
            (voc / "Annotations" / f"{i}.xml").write_text(_voc_xml(i, size, images[i]))
            if i not in missing_jpeg:
                write_jpeg(voc / "JPEGImages" / f"{i}.jpg", size, seed=k,
                           truncated=i in truncated_jpeg)
    return base


def write_coco(root: Path, split: str, categories: List[dict], images: List[dict],
               annotations: List[dict], write_images: bool = True,
               truncated_jpeg: Iterable[int] = ()) -> Path:
    """annotations/instances_<split>2014.json plus <split>2014/ JPEGs; returns ``root``.

    images: dicts with id, width, height (file_name is filled in the official pattern).
    annotations: dicts with image_id, category_id, bbox [x, y, w, h] (id/area/iscrowd added).
    """
    imgs = []
    for im in images:
        im = dict(im)
        im.setdefault("file_name", f"COCO_{split}2014_{int(im['id']):012d}.jpg")
        imgs.append(im)
        if write_images:
            write_jpeg(root / f"{split}2014" / im["file_name"], (im["width"], im["height"]),
                       seed=int(im["id"]), truncated=int(im["id"]) in set(truncated_jpeg))
    anns = []
    for k, a in enumerate(annotations, 1):
        a = dict(a)
        a.setdefault("id", 1000 + k)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2] * a["bbox"][3]))
        a.setdefault("segmentation", [[0, 0, 1, 0, 1, 1]])
        anns.append(a)
    doc = {"info": {"description": "COCO 2014 Dataset"}, "licenses": [], "images": imgs,
           "annotations": anns, "categories": categories}
    path = root / "annotations" / f"instances_{split}2014.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return root


def write_nuswide(root: Path, concepts: List[str],
                  splits: Dict[str, List[Tuple[str, Sequence[str]]]],
                  crlf: bool = True, concepts_in_folder: bool = True,
                  missing_jpeg: Iterable[str] = (), truncated_jpeg: Iterable[str] = ()) -> Path:
    """NUS-WIDE text files; returns ``root``.

    splits: "train"/"test" → [(listed path with back-slashes, [concepts present])].
    Lines end in CRLF when crlf=True (as the official Windows-made files).
    """
    eol = "\r\n" if crlf else "\n"
    cdir = root / "ConceptsList" if concepts_in_folder else root
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "Concepts81.txt").write_bytes("".join(c + eol for c in concepts).encode())
    (root / "ImageList").mkdir(parents=True, exist_ok=True)
    gt = root / "Groundtruth" / "TrainTestLabels"
    gt.mkdir(parents=True, exist_ok=True)
    missing_jpeg, truncated_jpeg = set(missing_jpeg), set(truncated_jpeg)
    for split, rows in splits.items():
        word = {"train": "Train", "test": "Test"}[split]
        (root / "ImageList" / f"{word}Imagelist.txt").write_bytes(
            "".join(p + eol for p, _ in rows).encode())
        for c in concepts:
            (gt / f"Labels_{c}_{word}.txt").write_bytes(
                "".join(f"{int(c in present)}{eol}" for _, present in rows).encode())
        for k, (p, _) in enumerate(rows):
            if p not in missing_jpeg:
                write_jpeg(root / "Flickr" / p.replace("\\", "/"), seed=k,
                           truncated=p in truncated_jpeg)
    return root


def write_glove(path: Path, vectors: Dict[str, Sequence[float]],
                header: Optional[str] = None) -> Path:
    """A GloVe text file: "token v1 ... vD" per line; tokens may contain spaces (840B)."""
    lines = [header] if header else []
    lines += [tok + " " + " ".join(f"{v:.6f}" for v in vec) for tok, vec in vectors.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
