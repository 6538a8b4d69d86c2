"""``synthetic``: procedurally generated multi-label scenes, no download needed.

Written on first use to a cache directory in COCO form (JPEGs plus an
``instances_<split>.json`` with boxes), so the real data path is exercised.
The generator plants the structure MLIC methods exist for:

* label co-occurrence: each image draws a latent scene type, which sets the
  probability of every class (a few "core" classes per scene);
* spatial relations: each scene's second core class sits above its first;
* object sizes: every class has its own size range, a third of them small;
* clutter: grey distractor shapes and line noise that belong to no class.

Everything is a pure function of (seed, split, image index).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw
from pydantic import Field

from ..registry import AugmentationName, register_dataset
from ..utils.io import atomic_write_json, cache_home
from .base import MIN_IMAGE_SIZE, DataConfig, DatasetSpec, LabelSet, require_folder
from .coco import read_coco_annotations

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "hbar", "vbar", "star")
COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230),
          "yellow": (235, 215, 40), "magenta": (210, 50, 200), "cyan": (40, 200, 210),
          "orange": (245, 140, 30), "white": (245, 245, 245), "brown": (130, 80, 40)}
MAX_CLASSES = len(SHAPES) * len(COLORS)


class SyntheticConfig(DataConfig):
    name: Literal["synthetic"] = "synthetic"
    train_split: str = "train"
    test_split: str = "test"
    image_size: int = Field(64, ge=MIN_IMAGE_SIZE)
    train_transform: AugmentationName = "plain"
    test_transform: AugmentationName = "plain"
    num_classes: int = Field(10, ge=1, le=MAX_CLASSES)  # distinct (colour, shape) pairs
    n_train: int = Field(600, ge=1)
    n_test: int = Field(300, ge=1)
    resolution: int = Field(64, ge=16)       # rendered side in pixels (the height if width is set)
    width: Optional[int] = Field(None, ge=16)  # rendered width; None = resolution (square images)
    n_scenes: int = Field(4, ge=1)
    clutter: int = Field(3, ge=0)
    seed: int = Field(0, ge=0, le=2 ** 32 - 1)


def class_names(num_classes: int) -> List[str]:
    """Colour-major (shape, colour) names: distinct classes share shapes or colours."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"synthetic num_classes must be in 1..{MAX_CLASSES}, got {num_classes}")
    names = [f"{c} {s}" for c in COLORS for s in SHAPES]
    # Interleave so small C still mixes shapes and colours.
    order = sorted(range(len(names)), key=lambda i: (i % len(SHAPES) + i // len(SHAPES)) % len(SHAPES) * 100 + i)
    return [names[i] for i in order[:num_classes]]


class _World:
    """Scene priors and class sizes, a function of (seed, num_classes, n_scenes)."""

    def __init__(self, cfg: SyntheticConfig):
        rng = np.random.default_rng([cfg.seed, 7919])
        c = cfg.num_classes
        self.names = class_names(c)
        self.scene_prob = np.full((cfg.n_scenes, c), 0.04)
        self.core: List[np.ndarray] = []
        for s in range(cfg.n_scenes):
            core = rng.choice(c, size=min(c, 3), replace=False)
            self.scene_prob[s, core] = [0.85, 0.6, 0.45][:len(core)]
            self.core.append(core)
        # Fraction of the image side: a third of the classes are small.
        small = rng.random(c) < 1 / 3
        self.size_lo = np.where(small, 0.12, 0.22)
        self.size_hi = np.where(small, 0.18, 0.38)


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: Tuple[float, float, float, float], color):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=color)
    elif shape == "cross":
        draw.rectangle((x1, cy - h / 6, x2, cy + h / 6), fill=color)
        draw.rectangle((cx - w / 6, y1, cx + w / 6, y2), fill=color)
    elif shape == "ring":
        draw.ellipse(box, outline=color, width=max(1, int(w / 5)))
    elif shape == "diamond":
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=color)
    elif shape == "hbar":
        draw.rectangle((x1, cy - h / 5, x2, cy + h / 5), fill=color)
    elif shape == "vbar":
        draw.rectangle((cx - w / 5, y1, cx + w / 5, y2), fill=color)
    elif shape == "star":
        pts = []
        for k in range(10):
            r = (w / 2) if k % 2 == 0 else (w / 5)
            a = np.pi / 2 + k * np.pi / 5
            pts.append((cx + r * np.cos(a), cy - r * np.sin(a)))
        draw.polygon(pts, fill=color)


def render_image(world: _World, cfg: SyntheticConfig, split_id: int, index: int):
    """One image. Returns (PIL image, [(class, (x1, y1, x2, y2))...])."""
    rng = np.random.default_rng([cfg.seed, split_id, index])
    r = cfg.resolution
    rw = cfg.width or r  # x extent; object sizes stay relative to the height r
    scene = int(rng.integers(len(world.core)))
    present = np.flatnonzero(rng.random(len(world.names)) < world.scene_prob[scene])
    if present.size == 0:
        present = world.core[scene][:1]
    base = rng.integers(20, 90, size=3)
    grad = np.linspace(0, 40, r)[:, None, None] * rng.choice([-1, 1])
    bg = np.clip(base[None, None, :] + grad + rng.normal(0, 6, (r, rw, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(bg, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, cfg.clutter + 1))):  # clutter first, objects on top
        g = int(rng.integers(90, 170))
        s = rng.uniform(0.08, 0.25) * r
        x, y = rng.uniform(0, r - s, size=2) * [(rw - s) / (r - s), 1.0]
        _draw(draw, SHAPES[int(rng.integers(len(SHAPES)))], (x, y, x + s, y + s), (g, g, g))
        draw.line([tuple(rng.uniform(0, r, 2) * [rw / r, 1.0]), tuple(rng.uniform(0, r, 2) * [rw / r, 1.0])],
                  fill=(g, g, g), width=1)
    objs = []
    anchor_box = None
    core = world.core[scene]
    # Draw the anchor (first core class) first so the relation can refer to it.
    ordered = sorted(present.tolist(), key=lambda c: 0 if c == core[0] else 1)
    for c in ordered:
        s = rng.uniform(world.size_lo[c], world.size_hi[c]) * r
        if len(core) > 1 and c == core[1] and anchor_box is not None:
            ax1, ay1, ax2, _ = anchor_box  # relation: sits directly above the anchor
            x = np.clip((ax1 + ax2) / 2 - s / 2 + rng.normal(0, s / 4), 0, rw - s)
            y = np.clip(ay1 - s - rng.uniform(0, 0.05 * r), 0, r - s)
        elif c == core[0]:
            x, y = rng.uniform(0, rw - s), rng.uniform(0.45 * r, r - s) if r - s > 0.45 * r else 0.0
        else:
            x, y = rng.uniform(0, r - s, size=2) * [(rw - s) / (r - s), 1.0]
        box = (float(x), float(y), float(x + s), float(y + s))
        color_name, shape = world.names[c].split(" ")
        jitter = rng.integers(-20, 21, size=3)
        color = tuple(int(v) for v in np.clip(np.array(COLORS[color_name]) + jitter, 0, 255))
        _draw(draw, shape, box, color)
        if c == core[0]:
            anchor_box = box
        objs.append((c, box))
    return img, objs


_GEN_KEYS = ("num_classes", "n_train", "n_test", "resolution", "n_scenes", "clutter", "seed")


def _gen_params(cfg: SyntheticConfig) -> Dict[str, int]:
    """The settings that determine the generated files (bump version on generator changes)."""
    extra = {"width": cfg.width} if cfg.width else {}  # square configs keep their old key
    return {k: getattr(cfg, k) for k in _GEN_KEYS} | extra | {"version": 1}


def _config_key(cfg: SyntheticConfig) -> str:
    return hashlib.sha256(json.dumps(_gen_params(cfg), sort_keys=True).encode()).hexdigest()[:12]


def generate_split(cfg: SyntheticConfig, root: Path, split: str) -> Path:
    """Write ``root/<split>/*.jpg`` and ``root/annotations/instances_<split>.json``.

    The images go to a temp directory that is renamed into place, and the JSON
    is written last and atomically, so its presence means the split is complete.
    """
    ann = root / "annotations" / f"instances_{split}.json"
    if ann.exists():
        return ann
    n = {"train": cfg.n_train, "test": cfg.n_test}[split]
    split_id = {"train": 1, "test": 2}[split]
    world = _World(cfg)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{split}-", dir=str(root)))
    images, anns = [], []
    try:
        for i in range(n):
            img, objs = render_image(world, cfg, split_id, i)
            name = f"{i + 1:06d}.jpg"
            img.save(tmp / name, quality=95)
            images.append({"id": i + 1, "file_name": name, "width": cfg.width or cfg.resolution,
                           "height": cfg.resolution})
            for c, (x1, y1, x2, y2) in objs:
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1,
                             "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                             "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0})
        final = root / split
        if final.exists():  # leftover of an interrupted run: the JSON was never written
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cats = [{"id": c + 1, "name": nm, "supercategory": "shape"} for c, nm in enumerate(world.names)]
    atomic_write_json(ann, {"info": {"description": "gmbench synthetic", "generator": _gen_params(cfg)},
                            "images": images, "annotations": anns, "categories": cats}, indent=None)
    return ann


@register_dataset("synthetic", config=SyntheticConfig)
class SyntheticSpec(DatasetSpec):
    name = "synthetic"
    splits = ("train", "test")
    generated = True
    layout = ("ROOT/annotations/instances_{train,test}.json\nROOT/{train,test}/NNNNNN.jpg\n"
              "(generated on first use; ROOT defaults to ~/.cache/gmbench/synthetic/<hash>)")

    def expected_counts_for(self, cfg: SyntheticConfig) -> Dict[str, int]:
        return {"train": cfg.n_train, "test": cfg.n_test}

    def check_root(self, cfg: SyntheticConfig) -> None:
        """A data.root from a config or the command line must be an existing folder: the run
        and the CLIs never create a folder the user named (a typo would scatter data there).
        ``prepare_root`` itself, a library call, creates it."""
        if not cfg.root:
            return
        require_folder(cfg.root, f"the synthetic images are generated into an existing folder "
                       f"only. Create it first, or leave data.root unset to use the cache "
                       f"({cache_home()}/synthetic/"
                       f"<settings hash>)")

    def prepare_root(self, cfg: SyntheticConfig) -> Path:
        if cfg.root:
            root = Path(cfg.root).expanduser()
        else:
            base = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else cache_home()
            root = base / "synthetic" / _config_key(cfg)
        for split in self.splits:
            generate_split(cfg, root, split)
        return root

    def expected_files(self, root: Path, split: str, cfg) -> List[Path]:
        return [root / "annotations" / f"instances_{split}.json"]

    def read_labels(self, root: Path, split: str, cfg: SyntheticConfig) -> LabelSet:
        if split not in self.splits:
            raise ValueError(f"synthetic has splits {self.splits}, not {split!r}")
        generate_split(cfg, root, split)
        return read_coco_annotations(root / "annotations" / f"instances_{split}.json", root / split,
                                     fix=f"gmbench generated it: delete {root} so that it is "
                                         f"generated again")
