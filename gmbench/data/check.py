"""`gmbench data check`: is a dataset on disk complete and readable?

Per split: images listed / found / unreadable (every bad file is named), labels per
image, per-class counts, and mismatches with the official image and class counts.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple


from gmbench.data.base import DataConfig, DatasetSpec

# Official class counts; a different number means the wrong class/concept list.
EXPECTED_CLASSES = {"voc2007": 20, "coco2014": 80, "nuswide": 81}


def check_image(path: str) -> Optional[str]:
    """None when ``path`` decodes fully, else a short reason ("missing", "truncated ...")."""
    from PIL import Image, ImageFile

    if not os.path.isfile(path):
        return "missing"
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG must fail, not be padded
    try:
        with Image.open(path) as im:
            im.verify()  # structure/CRC checks (PNG); cheap
        with Image.open(path) as im:
            # JPEG: decode at 1/8 scale via DCT scaling; still reads every scan, so a
            # truncated or corrupt stream fails, at a fraction of the full decode cost.
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
        return None
    except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
        return f"{type(e).__name__}: {e}"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def _exists_only(path: str) -> Optional[str]:
    return None if os.path.isfile(path) else "missing"


def scan_images(paths: Sequence[str], decode: bool = True, workers: int = 1,
                progress: bool = False) -> List[Optional[str]]:
    """check_image (or an existence test when decode=False) for each path, in order."""
    fn = check_image if decode else _exists_only
    it: Iterable
    if workers > 1 and len(paths) > 256:
        pool = ProcessPoolExecutor(max_workers=workers)
        it = pool.map(fn, paths, chunksize=64)
    else:
        pool, it = None, map(fn, paths)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, total=len(paths), unit="img", leave=False)
    try:
        return list(it)
    finally:
        if pool is not None:
            pool.shutdown()


@dataclass
class SplitReport:
    """Findings for one split; ``problems`` empty means the split is fine."""
    dataset: str
    split: str
    listed: int = 0
    expected: Optional[int] = None
    missing: List[str] = field(default_factory=list)
    unreadable: List[Tuple[str, str]] = field(default_factory=list)
    decoded: bool = True
    class_names: List[str] = field(default_factory=list)
    class_counts: List[int] = field(default_factory=list)
    ignored_counts: List[int] = field(default_factory=list)
    labels_per_image: Dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None

    @property
    def found(self) -> int:
        return self.listed - len(self.missing)

    @property
    def problems(self) -> List[str]:
        out = []
        if self.error:
            out.append(self.error)
            return out
        if self.expected is not None and self.listed != self.expected:
            out.append(f"{self.listed} images listed, the official count is {self.expected}")
        want_c = EXPECTED_CLASSES.get(self.dataset)
        if want_c is not None and len(self.class_names) != want_c:
            out.append(f"{len(self.class_names)} classes, the official count is {want_c}")
        if self.missing:
            out.append(f"{len(self.missing)} image file(s) missing")
        if self.unreadable:
            out.append(f"{len(self.unreadable)} image file(s) unreadable")
        return out


def expected_count(spec: DatasetSpec, split: str, cfg: DataConfig) -> Optional[int]:
    counts = spec.expected_counts_for(cfg) if hasattr(spec, "expected_counts_for") \
        else spec.expected_counts
    return counts.get(split)


def check_split(spec: DatasetSpec, root: Path, split: str, cfg: DataConfig,
                decode: bool = True, workers: int = 1, progress: bool = False) -> SplitReport:
    rep = SplitReport(dataset=cfg.name, split=split, decoded=decode,
                      expected=expected_count(spec, split, cfg))
    try:
        labels = spec.read_labels(root, split, cfg)
    except (OSError, ValueError, KeyError) as e:
        msg = str(e) if not isinstance(e, KeyError) else f"missing key {e}"
        rep.error = f"cannot read the {split} annotations: {msg}"
        return rep
    rep.listed = len(labels)
    rep.class_names = list(labels.class_names)
    t = labels.targets
    rep.class_counts = (t == 1).sum(axis=0).astype(int).tolist()
    rep.ignored_counts = (t == -1).sum(axis=0).astype(int).tolist()
    pos = (t == 1).sum(axis=1)
    rep.labels_per_image = {
        "mean": float(pos.mean()) if len(pos) else 0.0,
        "min": int(pos.min()) if len(pos) else 0,
        "max": int(pos.max()) if len(pos) else 0,
        "no_positive": int((pos == 0).sum()),
        "ignored_entries": int((t == -1).sum()),
    }
    paths = [str(p) for p in labels.image_paths]
    for p, why in zip(paths, scan_images(paths, decode, workers, progress)):
        if why == "missing":
            rep.missing.append(p)
        elif why is not None:
            rep.unreadable.append((p, why))
    return rep


def check_dataset(name: str, root, splits: Optional[Sequence[str]] = None,
                  decode: bool = True, workers: int = 1, progress: bool = False,
                  **options) -> List[SplitReport]:
    """Reports for ``splits`` (default: the config's train and test splits)."""
    from gmbench.data import data_config, get_spec

    cfg = data_config(name, root=None if root is None else str(root), **options)
    spec = get_spec(name)
    spec.check_root(cfg)  # a root given on the command line is never created
    root_path = spec.prepare_root(cfg)
    splits = list(splits) if splits else [cfg.train_split, cfg.test_split]
    return [check_split(spec, root_path, s, cfg, decode, workers, progress) for s in splits]


def format_report(reports: Sequence[SplitReport]) -> str:
    lines: List[str] = []
    for r in reports:
        lines.append(f"== {r.dataset} / {r.split}")
        if r.error:
            lines.append(f"  ERROR: {r.error}")
            continue
        official = "no official count" if r.expected is None else f"official {r.expected}"
        unread = f"unreadable {len(r.unreadable)}" if r.decoded else "not decoded (--no-decode)"
        lines.append(f"  images: listed {r.listed} ({official}), found {r.found}, "
                     f"missing {len(r.missing)}, {unread}")
        lp = r.labels_per_image
        lines.append(f"  labels per image: mean {lp['mean']:.3f}, min {lp['min']}, "
                     f"max {lp['max']}; {lp['no_positive']} image(s) with no label; "
                     f"{lp['ignored_entries']} ignored (-1) entries")
        lines.append(f"  per-class counts ({len(r.class_names)} classes; positive"
                     f"{' / ignored' if any(r.ignored_counts) else ''}):")
        width = max((len(c) for c in r.class_names), default=0)
        for c, n, ig in zip(r.class_names, r.class_counts, r.ignored_counts):
            lines.append(f"    {c:<{width}}  {n:>7d}" + (f" / {ig}" if any(r.ignored_counts)
                                                          else ""))
        for p in r.missing:
            lines.append(f"  missing: {p}")
        for p, why in r.unreadable:
            lines.append(f"  unreadable: {p} ({why})")
        for msg in r.problems:
            lines.append(f"  PROBLEM: {msg}")
    n_prob = sum(len(r.problems) for r in reports)
    lines.append("OK: no problems found" if n_prob == 0 else f"{n_prob} problem(s) found")
    return "\n".join(lines)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


__all__ = ["check_image", "scan_images", "SplitReport", "check_split", "check_dataset",
           "format_report", "expected_count", "default_workers", "EXPECTED_CLASSES"]
