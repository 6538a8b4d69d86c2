"""NUS-WIDE (81 concepts) from its official text files.

Image lists use Windows back-slash paths and may have CRLF line ends; labels are
one 0/1 per line per concept file, aligned with the split's image list.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, List, Literal, Optional

import numpy as np

from gmbench.data.base import AnnotationError, DataConfig, DatasetSpec, LabelSet, fix_hint
from gmbench.registry import register_dataset

NUS_GET = ("download the NUS-WIDE ground truth (Groundtruth.zip, ImageList.zip, "
           "ConceptsList.zip) again from the NUS-WIDE page")
NUSWIDE_LAYOUT = """\
ROOT/
  Concepts81.txt                      (or ConceptsList/Concepts81.txt; one concept per line)
  ImageList/TrainImagelist.txt, TestImagelist.txt      (e.g. actor\\0001_2124494179.jpg)
  Groundtruth/TrainTestLabels/Labels_<concept>_Train.txt, Labels_<concept>_Test.txt
  Flickr/actor/0001_2124494179.jpg ...  (image folder; data.image_dir changes the name)"""

# Split name → the capitalised word in the official file names.
_SPLIT_WORD = {"train": "Train", "test": "Test"}


class NUSWIDEConfig(DataConfig):
    name: Literal["nuswide"] = "nuswide"
    train_split: str = "train"
    test_split: str = "test"
    # False: the official split with every listed image (161,789 / 107,859, the paper's
    # counts). True: drop images with no positive concept (~125k / ~84k, the other
    # convention in the literature).
    drop_unlabeled: bool = False
    # Folder under ROOT that holds the images, addressed by the listed relative path.
    image_dir: str = "Flickr"


def _lines(path: Path) -> List[str]:
    """Non-empty lines with CR/LF and surrounding whitespace stripped."""
    # The lists are plain ASCII; latin-1 never fails, so an odd byte cannot abort a read.
    text = path.read_bytes().decode("latin-1")
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def find_concepts_file(root: Path) -> Path:
    for cand in (root / "Concepts81.txt", root / "ConceptsList" / "Concepts81.txt"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no Concepts81.txt under {root} (also looked in ConceptsList/). "
                            f"Expected layout:\n{NUSWIDE_LAYOUT}")


def read_concepts(root: Path) -> List[str]:
    path = find_concepts_file(root)
    names = _lines(path)
    fix = fix_hint("nuswide", root, NUS_GET)
    if len(set(names)) != len(names):
        twice = next(c for c in names if names.count(c) > 1)
        raise AnnotationError(f"{path}: concept {twice!r} is listed twice. {fix}")
    if not names:
        raise AnnotationError(f"{path}: no concept names found. {fix}")
    return names


def normalise_image_path(entry: str) -> str:
    r"""'actor\0001_2.jpg' → 'actor/0001_2.jpg'. An absolute Windows path such as
    'C:\ImageData\Flickr\actor\x.jpg' (Imagelist.txt style) keeps the part after Flickr."""
    p = entry.strip().replace("\\", "/")
    if len(p) > 1 and p[1] == ":" and "/Flickr/" in p:
        p = p.split("/Flickr/", 1)[1]
    return p.lstrip("/")


def read_image_list(path: Path) -> List[str]:
    if not path.is_file():
        raise FileNotFoundError(f"missing NUS-WIDE image list {path}. "
                                f"Expected layout:\n{NUSWIDE_LAYOUT}")
    lines = _lines(path)
    cols = next(((k, ln) for k, ln in enumerate(lines, 1) if len(ln.split()) != 1), None)
    if cols is not None:  # one path a line; a second column is a different file's format
        raise AnnotationError(f"{path}: entry {cols[0]} {cols[1]!r} has {len(cols[1].split())} "
                              f"columns; expected one image path a line. "
                              f"{fix_hint('nuswide', path.parents[1], NUS_GET)}")
    ids = [normalise_image_path(ln) for ln in lines]
    if len(set(ids)) != len(ids):
        # Rows must stay aligned with the label files, so duplicates are kept, not dropped.
        warnings.warn(f"{path}: {len(ids) - len(set(ids))} image path(s) listed more than "
                      f"once; kept as separate rows", stacklevel=2)
    return ids


def _bad_label_line(path: Path, fix: str) -> Optional[AnnotationError]:
    """The first line that is not a single 0 or 1, as an error naming it (None: all are)."""
    for lineno, line in enumerate(path.read_bytes().decode("latin-1").splitlines(), 1):
        parts = line.split()
        if len(parts) > 1:
            return AnnotationError(f"{path}:{lineno}: {len(parts)} values {line.strip()!r}; "
                                   f"expected one 0 or 1 a line. {fix}")
        if parts and parts[0] not in ("0", "1"):
            return AnnotationError(f"{path}:{lineno}: value {parts[0]!r}; expected 0 or 1. {fix}")
    return None


def read_label_column(path: Path, n: int, fix: Optional[str] = None) -> np.ndarray:
    """int8 [n] of 0/1 from one Labels_<concept>_<Split>.txt."""
    if not path.is_file():
        raise FileNotFoundError(f"missing NUS-WIDE label file {path}. "
                                f"Expected layout:\n{NUSWIDE_LAYOUT}")
    fix = fix or fix_hint("nuswide", path.parents[2], NUS_GET)
    vals = path.read_bytes().split()  # C-speed split on any whitespace, CR included
    if len(vals) != n or not set(vals) <= {b"0", b"1"}:
        bad = _bad_label_line(path, fix)
        raise bad or AnnotationError(
            f"{path}: {len(vals)} labels but the image list has {n} images; the label and "
            f"list files must come from the same release. {fix}")
    return np.frombuffer(b"".join(vals), dtype=np.uint8).astype(np.int8) - 48


@register_dataset("nuswide", config=NUSWIDEConfig)
class NUSWIDE(DatasetSpec):
    """NUS-WIDE; image id = listed relative path with '/' separators."""
    name = "nuswide"
    splits = ("train", "test")
    expected_counts = {"train": 161789, "test": 107859}
    layout = NUSWIDE_LAYOUT

    def expected_counts_for(self, cfg: DataConfig) -> Dict[str, int]:
        # Unlabeled-dropped counts differ slightly between releases; no official figure.
        return {} if getattr(cfg, "drop_unlabeled", False) else dict(self.expected_counts)

    def _check_split(self, split: str) -> None:
        if split not in _SPLIT_WORD:
            raise ValueError(f"nuswide has no split {split!r}; valid: train, test")

    def _list_path(self, root: Path, split: str) -> Path:
        return root / "ImageList" / f"{_SPLIT_WORD[split]}Imagelist.txt"

    def _label_path(self, root: Path, concept: str, split: str) -> Path:
        return (root / "Groundtruth" / "TrainTestLabels"
                / f"Labels_{concept}_{_SPLIT_WORD[split]}.txt")

    def expected_files(self, root: Path, split: str, cfg: DataConfig) -> List[Path]:
        self._check_split(split)
        root = Path(root).expanduser()
        try:
            concepts_file = find_concepts_file(root)
            concepts = read_concepts(root)
        except (FileNotFoundError, ValueError):
            return [root / "Concepts81.txt", self._list_path(root, split)]
        return [concepts_file, self._list_path(root, split)] + \
            [self._label_path(root, c, split) for c in concepts]

    def read_labels(self, root: Path, split: str, cfg: DataConfig) -> LabelSet:
        self._check_split(split)
        root = Path(root).expanduser()
        concepts = read_concepts(root)
        ids = read_image_list(self._list_path(root, split))
        targets = np.zeros((len(ids), len(concepts)), dtype=np.int8)
        for j, c in enumerate(concepts):
            targets[:, j] = read_label_column(self._label_path(root, c, split), len(ids))
        if getattr(cfg, "drop_unlabeled", False):
            keep = np.flatnonzero(targets.max(axis=1, initial=0) > 0)
            ids = [ids[i] for i in keep]
            targets = targets[keep]
        image_dir = root / getattr(cfg, "image_dir", "Flickr")
        return LabelSet(image_ids=ids, class_names=concepts, targets=targets,
                        image_paths=[image_dir / i for i in ids])
