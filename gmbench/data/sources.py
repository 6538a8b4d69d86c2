"""The official files gmbench can fetch: URL, published size and checksum (with where each is
published), and where each archive is unpacked. Read by ``gmbench fetch`` (gmbench/cli/fetch.py).

Checksums, each from the cited publication (none is invented; a file without a published
checksum would carry ``checksum=None`` and be checked by size and ``gmbench data check``):

* VOC 2007: the md5 of each tar is torchvision's (``torchvision/datasets/voc.py``,
  ``DATASET_YEAR_DICT``, used by ``VOCDetection(download=True)``); the byte sizes are those of
  TensorFlow Datasets' ``tensorflow_datasets/url_checksums/voc.txt`` (same file names).
* COCO 2014: cocodataset.org publishes no checksum; TensorFlow Datasets records size and
  sha256 of the three official URLs in ``tensorflow_datasets/url_checksums/coco2014.txt``.
  (mlcommons/training ``stable_diffusion/scripts/datasets/coco-2014-validation-download.sh``
  publishes sha1 values for val2014.zip and annotations_trainval2014.zip as well.)
* GloVe: nlp.stanford.edu publishes no checksum; the Stanford NLP group's own Hugging Face
  copy (``stanfordnlp/glove``, commits cdb7448 and 1db2080) carries the git-lfs sha256 and size,
  which is what is checked, whichever URL served the bytes.
* NUS-WIDE: no archive of the images is published (see NUSWIDE_INSTRUCTIONS).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

FETCH_DIR = ".gmbench-fetch"  # under a dataset root: downloads in progress and done-markers

_TV_VOC = "md5: torchvision datasets/voc.py DATASET_YEAR_DICT; size: TFDS url_checksums/voc.txt"
_TFDS_COCO = "size + sha256: TensorFlow Datasets url_checksums/coco2014.txt"
_HF_GLOVE = "size + sha256: git-lfs pointer in huggingface.co/stanfordnlp/glove"


@dataclass(frozen=True)
class Archive:
    """One published file. ``provides``: paths (relative to the folder it is unpacked into)
    whose presence shows it was unpacked there already, by gmbench or by hand."""
    name: str
    url: str
    size: int                      # bytes; approximate when not size_exact
    checksum: Optional[str]        # gmbench.utils.download.Checksum text, None if unpublished
    source: str                    # where size and checksum are published
    what: str
    provides: Tuple[str, ...] = ()
    size_exact: bool = True
    mirrors: Tuple[str, ...] = ()  # further official or author-run URLs of the same file


VOC_BASE = "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/"
COCO_BASE = "http://images.cocodataset.org/"
_DEVKIT = "VOCdevkit/VOC2007/"

ARCHIVES: Dict[str, Archive] = {a.name: a for a in (
    Archive("VOCtrainval_06-Nov-2007.tar", VOC_BASE + "VOCtrainval_06-Nov-2007.tar", 460032000,
            "md5:c52e279531787c972589f7e41ab4ae64", _TV_VOC,
            "VOC 2007 trainval: images, XML annotations, ImageSets (train/val/trainval)",
            provides=(_DEVKIT + "ImageSets/Main/trainval.txt",)),
    Archive("VOCtest_06-Nov-2007.tar", VOC_BASE + "VOCtest_06-Nov-2007.tar", 451020800,
            "md5:b6e924de25625d8de591ea690078ad9f", _TV_VOC,
            "VOC 2007 test: images, XML annotations, ImageSets (test)",
            provides=(_DEVKIT + "ImageSets/Main/test.txt",)),
    Archive("annotations_trainval2014.zip", COCO_BASE + "annotations/annotations_trainval2014.zip",
            252872794, "sha256:031296bbc80c45a1d1f76bf9a90ead27e94e99ec629208449507a4917a3bf009",
            _TFDS_COCO, "COCO 2014 annotations (instances_train2014.json, instances_val2014.json)",
            provides=("annotations/instances_train2014.json", "annotations/instances_val2014.json")),
    Archive("train2014.zip", COCO_BASE + "zips/train2014.zip", 13510573713,
            "sha256:ede4087e640bddba550e090eae701092534b554b42b05ac33f0300b984b31775", _TFDS_COCO,
            "COCO 2014 train images (82,783)",
            provides=("train2014/COCO_train2014_000000000009.jpg",)),
    Archive("val2014.zip", COCO_BASE + "zips/val2014.zip", 6645013297,
            "sha256:fe9be816052049c34717e077d9e34aa60814a55679f804cd043e3cbee3b9fde0", _TFDS_COCO,
            "COCO 2014 val images (40,504)",
            provides=("val2014/COCO_val2014_000000000042.jpg",)),
    Archive("glove.6B.zip", "https://huggingface.co/stanfordnlp/glove/resolve/main/glove.6B.zip",
            862182753, "sha256:6471382cdd837544bf3ac72497a38715e845897d265b2b424b4761832009c837",
            _HF_GLOVE, "GloVe 6B word vectors (Wikipedia 2014 + Gigaword 5; 50/100/200/300-d)",
            mirrors=("https://nlp.stanford.edu/data/glove.6B.zip",)),
    Archive("glove.840B.300d.zip",
            "https://huggingface.co/stanfordnlp/glove/resolve/main/glove.840B.300d.zip",
            2176768976, "sha256:f47355dd5b267bd10f08671e513790690233c76a9ffd73aa915d78f894a8912e",
            _HF_GLOVE, "GloVe 840B 300-d word vectors (Common Crawl)",
            mirrors=("https://nlp.stanford.edu/data/glove.840B.300d.zip",)),
)}

# split → the archives that hold it (images and labels together)
DATASET_ARCHIVES: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "voc2007": {s: ("VOCtrainval_06-Nov-2007.tar",) for s in ("trainval", "train", "val")}
    | {"test": ("VOCtest_06-Nov-2007.tar",)},
    "coco2014": {"train": ("annotations_trainval2014.zip", "train2014.zip"),
                 "val": ("annotations_trainval2014.zip", "val2014.zip")},
}
# GloVe text file name → (archive, member)
GLOVE_FILES: Dict[str, Tuple[str, str]] = {
    **{f"glove.6B.{d}d.txt": ("glove.6B.zip", f"glove.6B.{d}d.txt") for d in (50, 100, 200, 300)},
    "glove.840B.300d.txt": ("glove.840B.300d.zip", "glove.840B.300d.txt"),
}

NUSWIDE_INSTRUCTIONS = """\
NUS-WIDE has no direct official download of its images, so gmbench fetch does not download it
(and never guesses a mirror). The official page (Lab for Media Search, National University of
Singapore) is https://lms.comp.nus.edu.sg/wp-content/uploads/2019/research/nuswide/NUS-WIDE.html:
  1. download the ground truth, image list and concept list there (Groundtruth, ImageList,
     ConceptsList);
  2. for the raw images, fill in the Agreement and Disclaimer Form linked there and e-mail it
     to the contact the page names; the authors then send download instructions;
  3. lay the files out as `python -m gmbench data check nuswide --root ROOT` expects
     (ROOT/Concepts81.txt, ImageList/, Groundtruth/TrainTestLabels/, Flickr/<concept>/...),
     then run that command."""


class NotFetchable(ValueError):
    """A dataset or file with no official download gmbench may use; the message says why."""


@dataclass
class Item:
    """One archive to fetch for a plan: where it is downloaded, unpacked and marked done.

    folder: where it is unpacked (a dataset root, or the GloVe file's folder).
    pick:   {member: target path} to unpack only those members (GloVe); None = all.
    dataset: the dataset `gmbench data check` verifies afterwards (None for GloVe).
    """
    archive: Archive
    folder: Path
    pick: Optional[Dict[str, Path]] = None
    dataset: Optional[str] = None
    needs: List[str] = field(default_factory=list)  # what asked for it (rows, splits)

    @property
    def download_path(self) -> Path:
        return self.folder / FETCH_DIR / self.archive.name

    @property
    def marker(self) -> Path:
        return self.folder / FETCH_DIR / (self.archive.name + ".done")

    def provides(self) -> List[Path]:
        if self.pick is not None:
            return list(self.pick.values())
        if self.dataset == "voc2007":  # the reader also takes ROOT = VOCdevkit/ or VOC2007/
            from .voc import resolve_voc_dir
            try:
                base = resolve_voc_dir(self.folder)
            except FileNotFoundError:
                base = self.folder / _DEVKIT
            return [base / p[len(_DEVKIT):] if p.startswith(_DEVKIT) else self.folder / p
                    for p in self.archive.provides]
        return [self.folder / p for p in self.archive.provides]

    def present(self) -> bool:
        """Unpacked already: gmbench's done-marker, or every ``provides`` path on disk."""
        paths = self.provides()
        if self.pick is None and self.marker.is_file():
            return True
        return bool(paths) and all(p.exists() for p in paths)


def dataset_items(name: str, root: Path, splits: Sequence[str]) -> List[Item]:
    """The archives that hold ``splits`` of dataset ``name`` unpacked into ``root``.
    NotFetchable for NUS-WIDE (with the official instructions) and unknown datasets."""
    if name == "nuswide":
        raise NotFetchable(NUSWIDE_INSTRUCTIONS)
    if name.startswith("synthetic"):
        return []
    table = DATASET_ARCHIVES.get(name)
    if table is None:
        raise NotFetchable(f"dataset {name!r} has no official archive in gmbench's catalogue "
                           f"(fetchable: {', '.join(DATASET_ARCHIVES)}, and GloVe files)")
    out: Dict[str, Item] = {}
    for split in splits:
        if split not in table:
            raise NotFetchable(f"{name} has no split {split!r} in the catalogue; "
                               f"valid: {', '.join(table)}")
        for a in table[split]:
            out.setdefault(a, Item(ARCHIVES[a], Path(root), dataset=name)).needs.append(split)
    return list(out.values())


def glove_item(path: Path) -> Item:
    """The archive member that is GloVe file ``path`` (matched by its official file name)."""
    path = Path(path).expanduser()
    if path.name not in GLOVE_FILES:
        raise NotFetchable(f"{path}: not an official GloVe file name ({', '.join(GLOVE_FILES)}); "
                           f"gmbench cannot fetch it")
    archive, member = GLOVE_FILES[path.name]
    return Item(ARCHIVES[archive], path.parent, pick={member: path})


__all__ = ["Archive", "ARCHIVES", "DATASET_ARCHIVES", "GLOVE_FILES", "Item", "NotFetchable",
           "NUSWIDE_INSTRUCTIONS", "dataset_items", "glove_item", "FETCH_DIR"]
