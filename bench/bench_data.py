"""Time the label readers and GloVe streaming at the real datasets' sizes.

Writes full-size annotation text files (no images) in the official formats into a temp
folder, then times ``read_labels``. Runs against the installed gmbench. Usage::

    python bench/bench_data.py [--glove-lines 400000]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from gmbench.data import read_labels
from gmbench.data.glove import glove_embeddings
from gmbench.data.voc import VOC_CLASSES


def nuswide_files(root: Path, n_train: int, n_test: int, n_concepts: int = 81) -> None:
    rng = np.random.default_rng(0)
    concepts = [f"concept{k:02d}" for k in range(n_concepts)]
    (root / "ConceptsList").mkdir(parents=True)
    (root / "ConceptsList" / "Concepts81.txt").write_text("\r\n".join(concepts) + "\r\n")
    (root / "ImageList").mkdir()
    gt = root / "Groundtruth" / "TrainTestLabels"
    gt.mkdir(parents=True)
    for word, n in (("Train", n_train), ("Test", n_test)):
        (root / "ImageList" / f"{word}Imagelist.txt").write_text(
            "".join(f"c{k % 700}\\{k:07d}_{k * 7}.jpg\r\n" for k in range(n)))
        lab = rng.random((n, n_concepts)) < 0.03
        for j, c in enumerate(concepts):
            (gt / f"Labels_{c}_{word}.txt").write_bytes(
                b"".join(b"1\r\n" if v else b"0\r\n" for v in lab[:, j]))


def voc_annotation(image_id: str, objects) -> str:
    """Annotations/<id>.xml with the elements VOC 2007's files carry; objects: (name, box)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "The VOC2007 Database"
    size = ET.SubElement(root, "size")
    for tag, v in (("width", 500), ("height", 375), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    for name, box in objects:
        obj = ET.SubElement(root, "object")
        for tag, v in (("name", name), ("pose", "Unspecified"), ("truncated", 0), ("difficult", 0)):
            ET.SubElement(obj, tag).text = str(v)
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bndbox, tag).text = str(v)
    ET.indent(root, "\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def voc_files(base: Path, n: int) -> None:
    main = base / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    ann = base / "VOCdevkit" / "VOC2007" / "Annotations"
    main.mkdir(parents=True)
    ann.mkdir(parents=True)
    ids = [f"{k:06d}" for k in range(1, n + 1)]
    (main / "trainval.txt").write_text("".join(i + "\n" for i in ids))
    rng = np.random.default_rng(1)
    objs = {i: [(VOC_CLASSES[int(c)], (1, 1, 50, 50)) for c in rng.integers(0, 20, 2)]
            for i in ids}
    for c in VOC_CLASSES:
        (main / f"{c}_trainval.txt").write_text(
            "".join(f"{i} {1 if any(o[0] == c for o in objs[i]) else -1:2d}\n" for i in ids))
    for i in ids:
        (ann / f"{i}.xml").write_text(voc_annotation(i, objs[i]))


def glove_file(path: Path, n_lines: int, dim: int = 300) -> None:
    rng = np.random.default_rng(2)
    row = " ".join(f"{v:.5f}" for v in rng.standard_normal(dim))
    with open(path, "w") as f:
        for k in range(n_lines):
            f.write(f"w{k} {row}\n")
        f.write(f"dog {row}\ntable {row}\n")


def timed(label: str, fn):
    t = time.perf_counter()
    out = fn()
    print(f"{label}: {time.perf_counter() - t:.2f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--glove-lines", type=int, default=400_000)
    args = ap.parse_args()
    from gmbench.data import get_spec
    timed("registry import (gmbench.data/models/baselines, once per process)",
          lambda: get_spec("voc2007"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nuswide_files(tmp / "nus", 161_789, 107_859)
        ls = timed("nuswide read_labels train (161,789 x 81)",
                   lambda: read_labels("nuswide", tmp / "nus", "train"))
        assert len(ls) == 161_789
        voc_files(tmp / "voc", 5011)
        timed("voc2007 read_labels trainval (5,011, with XML boxes)",
              lambda: read_labels("voc2007", tmp / "voc", "trainval"))
        timed("voc2007 read_labels trainval (5,011, read_boxes=false)",
              lambda: read_labels("voc2007", tmp / "voc", "trainval", read_boxes=False))
        glove_file(tmp / "g.txt", args.glove_lines)
        size = (tmp / "g.txt").stat().st_size / 1e9
        timed(f"GloVe stream {args.glove_lines:,} lines ({size:.2f} GB), 2 words at the end",
              lambda: glove_embeddings(["dog", "diningtable"], tmp / "g.txt", 300))


if __name__ == "__main__":
    main()
