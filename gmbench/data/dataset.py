"""Torch dataset over a LabelSet, and the collate that builds the batch dict
documented in ``gmbench.models.base``."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors

from .base import LabelSet
from ..errors import BadImageError  # noqa: F401  (re-exported: raised here)


@contextmanager
def sample_rng(seed: int, epoch: int, index: int):
    """Seed python's and torch's CPU RNG from (seed, epoch, index) for one sample's
    augmentation, restoring both afterwards so the training RNG (dropout, ...) is
    untouched. The draws then depend on neither the worker that loads the sample
    nor the batches loaded before it, so any ``num_workers`` and any resume point
    give the same augmented images."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint64)
    py_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(state[0]))
        random.seed(int(state[1]))
        try:
            yield
        finally:
            random.setstate(py_state)


def map_difficult(targets: np.ndarray, mode: str) -> np.ndarray:
    """Training targets: -1 (difficult only) → 1, 0 or kept as -1 (ignored in the loss)."""
    if mode == "positive":
        return np.where(targets < 0, 1, targets).astype(np.float32)
    if mode == "negative":
        return np.where(targets < 0, 0, targets).astype(np.float32)
    if mode == "ignore":
        return targets.astype(np.float32)
    raise ValueError(f"data.difficult must be positive, negative or ignore, got {mode!r}")


class ImageDataset(torch.utils.data.Dataset):
    """Item i → dict(image [3,H,W], target [C], target_raw [C], index, boxes [k,4] norm).

    target:     training target after the ``difficult`` mapping (float, may hold -1).
    target_raw: the dataset's own 1 / 0 / -1, for evaluation.
    boxes:      annotation (or instance-source) boxes, normalised xyxy after the
                transform; only when ``with_boxes``.
    A missing or corrupt image raises BadImageError naming the file, or, with
    ``skip_bad_images``, yields None, which ``collate`` drops and counts.

    The key is an index, or ``(index, epoch)`` from the training sampler: then the
    augmentation is seeded by (``seed``, epoch, index) (see :func:`sample_rng`).

    load_image=False (only with an ``instance_source``): the item has no "image"; the
    file is neither opened nor transformed (methods that read cached features only).
    """

    accepts_epoch_keys = True

    def __init__(self, labels: LabelSet, transform: Callable, difficult: str = "ignore",
                 skip_bad_images: bool = False, with_boxes: bool = False,
                 box_source: Optional[Callable[[int, int, int], np.ndarray]] = None,
                 instance_source=None, seed: int = 0, load_image: bool = True):
        if not load_image and instance_source is None:
            raise ValueError("load_image=False needs an instance_source (the features to read)")
        self.seed = seed
        self.load_image = load_image
        self.labels = labels
        self.transform = transform
        self.targets = map_difficult(labels.targets, difficult)
        self.skip_bad_images = skip_bad_images
        self.with_boxes = with_boxes
        self.box_source = box_source
        self.instance_source = instance_source
        if with_boxes and box_source is None and labels.boxes is None and instance_source is None:
            raise ValueError("this method needs instance boxes, but the dataset has no box "
                             "annotations; use an instance cache (gmbench extract)")

    def __len__(self) -> int:
        return len(self.labels)

    def _open(self, i: int) -> Optional[Image.Image]:
        path = self.labels.image_paths[i]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (OSError, UnidentifiedImageError, SyntaxError) as e:
            if self.skip_bad_images:
                return None
            raise BadImageError(
                f"cannot read image {path} ({type(e).__name__}: {e}). Run `python -m gmbench "
                f"data check` to list every bad file, or set data.skip_bad_images=true") from None

    def _boxes_px(self, i: int, w: int, h: int) -> np.ndarray:
        if self.box_source is not None:
            return self.box_source(i, w, h)
        b = self.labels.boxes[i].astype(np.float32)
        if self.labels.sizes is not None:  # annotation pixels may refer to another scale
            sw, sh = self.labels.sizes[i]
            b = b * np.array([w / sw, h / sh, w / sw, h / sh], dtype=np.float32)
        return b

    def _cached_item(self, i: int, epoch: Optional[int] = None) -> dict:
        """Item i from the instance source alone (load_image=False): no decode, no transform.
        A source with ``at(i, epoch)`` (a views cache) gives the epoch's view of image i."""
        src = self.instance_source
        inst = src.at(i, epoch) if epoch is not None and hasattr(src, "at") else src[i]
        return {"target": torch.from_numpy(self.targets[i]),
                "target_raw": torch.from_numpy(self.labels.targets[i].astype(np.float32)),
                "index": i, "boxes": torch.as_tensor(inst["boxes"], dtype=torch.float32),
                "inst_feat": torch.as_tensor(inst["feat"], dtype=torch.float32)}

    def __getitem__(self, key: Union[int, Tuple[int, int]]):
        if isinstance(key, (tuple, list)):
            i, epoch = int(key[0]), int(key[1])
            with sample_rng(self.seed, epoch, i):
                return self._item(i, epoch)
        return self._item(int(key))

    def _item(self, i: int, epoch: Optional[int] = None):
        if not self.load_image:
            return self._cached_item(i, epoch)
        img = self._open(i)
        if img is None:
            return None
        item = {"target": torch.from_numpy(self.targets[i]),
                "target_raw": torch.from_numpy(self.labels.targets[i].astype(np.float32)),
                "index": i}
        if self.instance_source is not None:
            inst = self.instance_source[i]
            item["boxes"] = torch.as_tensor(inst["boxes"], dtype=torch.float32)
            item["inst_feat"] = torch.as_tensor(inst["feat"], dtype=torch.float32)
            item["image"] = self.transform(img)
        elif self.with_boxes:
            w, h = img.size
            bb = tv_tensors.BoundingBoxes(torch.from_numpy(self._boxes_px(i, w, h)).reshape(-1, 4),
                                          format="XYXY", canvas_size=(h, w))
            image, bb = self.transform(img, bb)
            H, W = image.shape[-2:]
            b = bb.as_subclass(torch.Tensor) / torch.tensor([W, H, W, H], dtype=torch.float32)
            keep = ((b[:, 2] - b[:, 0]) * W >= 1) & ((b[:, 3] - b[:, 1]) * H >= 1)
            item["image"], item["boxes"] = image, b[keep]
        elif hasattr(self.transform, "with_geometry"):  # data/geometry.py: where the view came from
            item["image"], item["geometry"] = self.transform.with_geometry(img)
        else:
            item["image"] = self.transform(img)
        return item


def collate(samples: List[Optional[dict]]) -> dict:
    """Stack items; pad ragged boxes/features to the batch max M with a mask."""
    n_skipped = sum(s is None for s in samples)
    samples = [s for s in samples if s is not None]
    if not samples:
        return {"n_skipped": n_skipped, "empty": True}
    batch = {
        "target": torch.stack([s["target"] for s in samples]),
        "target_raw": torch.stack([s["target_raw"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "n_skipped": n_skipped,
    }
    if "image" in samples[0]:  # absent when the dataset reads cached features only
        batch["image"] = torch.stack([s["image"] for s in samples])
    if "geometry" in samples[0]:
        batch["geometry"] = torch.stack([s["geometry"] for s in samples])
    if "boxes" in samples[0]:
        m = max(1, max(len(s["boxes"]) for s in samples))
        b = len(samples)
        boxes = torch.zeros(b, m, 4)
        mask = torch.zeros(b, m, dtype=torch.bool)
        for j, s in enumerate(samples):
            k = len(s["boxes"])
            boxes[j, :k], mask[j, :k] = s["boxes"], True
        batch["boxes"], batch["box_mask"] = boxes, mask
        if "inst_feat" in samples[0]:
            d = samples[0]["inst_feat"].shape[-1]
            feat = torch.zeros(b, m, d)
            for j, s in enumerate(samples):
                feat[j, :len(s["inst_feat"])] = s["inst_feat"]
            batch["inst_feat"] = feat
    return batch
