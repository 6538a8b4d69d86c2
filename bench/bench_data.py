"""Time the label readers and GloVe streaming at the real datasets' sizes.

Writes full-size annotation text files (no images) into a temp folder with the test
fixture writers' formats, then times ``read_labels``. Usage::

    python bench/bench_data.py [--glove-lines 400000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from gmbench.data import read_labels  # noqa: E402
from gmbench.data.glove import glove_embeddings  # noqa: E402


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


def voc_files(base: Path, n: int) -> None:
    from fixtures_official import VOC20, _voc_xml
    main = base / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    ann = base / "VOCdevkit" / "VOC2007" / "Annotations"
    main.mkdir(parents=True)
    ann.mkdir(parents=True)
    ids = [f"{k:06d}" for k in range(1, n + 1)]
    (main / "trainval.txt").write_text("".join(i + "\n" for i in ids))
    rng = np.random.default_rng(1)
    objs = {i: [(VOC20[int(c)], False, (1, 1, 50, 50)) for c in rng.integers(0, 20, 2)]
            for i in ids}
    for c in VOC20:
        (main / f"{c}_trainval.txt").write_text(
            "".join(f"{i} {1 if any(o[0] == c for o in objs[i]) else -1:2d}\n" for i in ids))
    for i in ids:
        (ann / f"{i}.xml").write_text(_voc_xml(i, (500, 375), objs[i]))


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
