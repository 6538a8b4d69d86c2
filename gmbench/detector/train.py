"""``gmbench detector train``: Faster R-CNN on the box annotations of a training split.

Conventions of the engine: validated config, atomic checkpoints (model,
optimizer, RNG, epoch and step, so a stopped run resumes mid-epoch), a progress
bar, a NaN guard, and a JSON record.  Output in ``OUT``::

    OUT/checkpoints/ckpt-e*-s*.pt   resume state (last K)
    OUT/detector.pth                weights file (gmbench.detector.model), for `gmbench extract --weights`
    OUT/record.json                 config, losses per epoch, box AP on the test split, timing
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from PIL import Image

from ..utils import checkpoint
from ..data.base import LabelSet
from ..utils.io import atomic_write_json, config_digest, sha256_file
from .config import DetectorTrainConfig
from .model import arch_name, build_faster_rcnn, save_detector_file
from ..errors import NoBoxesError  # noqa: F401  (re-exported: raised here)


def require_boxes(labels: LabelSet, dataset: str, split: str) -> None:
    if labels.boxes is None or labels.box_labels is None:
        raise NoBoxesError(
            f"dataset {dataset!r} split {split!r} has no box annotations, so no detector can be "
            f"trained on it (NUS-WIDE ships image-level labels only). Train on a dataset with "
            f"boxes (synthetic, voc2007 trainval, coco2014 train2014) and extract with that file, "
            f"or use the public checkpoint (`gmbench extract --weights coco`)")
    if sum(len(b) for b in labels.boxes) == 0:
        raise NoBoxesError(f"dataset {dataset!r} split {split!r}: all {len(labels)} images have "
                           f"zero boxes; nothing to train a detector on")


class BoxImages(torch.utils.data.Dataset):
    """Item i → (float [3, H, W] in [0, 1], target dict(boxes [k, 4] xyxy px, labels [k] in 1..C)).

    Annotation pixels are rescaled to the decoded image where the annotation
    gives another size (``LabelSet.sizes``); degenerate boxes are dropped.
    """

    def __init__(self, labels: LabelSet, index: List[int], hflip: bool = False, seed: int = 0):
        self.labels, self.index, self.hflip, self.seed = labels, list(index), hflip, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, j: int):
        i = self.index[j]
        path = self.labels.image_paths[i]
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        except OSError as e:
            raise RuntimeError(f"cannot read image {path} ({e}); run `python -m gmbench data "
                               f"check` to list every bad file") from None
        h, w = arr.shape[:2]
        b = np.asarray(self.labels.boxes[i], dtype=np.float32).reshape(-1, 4).copy()
        if self.labels.sizes is not None:
            sw, sh = self.labels.sizes[i]
            b *= np.array([w / sw, h / sh, w / sw, h / sh], dtype=np.float32)
        b[:, 0::2] = b[:, 0::2].clip(0, w)
        b[:, 1::2] = b[:, 1::2].clip(0, h)
        lab = np.asarray(self.labels.box_labels[i], dtype=np.int64).reshape(-1) + 1
        keep = (b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)
        b, lab = b[keep], lab[keep]
        img = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        if self.hflip and np.random.default_rng([self.seed, self.epoch, i]).random() < 0.5:
            img = img.flip(-1)
            b = np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1) if len(b) else b
        return img, {"boxes": torch.from_numpy(np.ascontiguousarray(b)).reshape(-1, 4),
                     "labels": torch.from_numpy(lab)}


def _collate(items):
    return [x[0] for x in items], [x[1] for x in items]


def lr_at(cfg: DetectorTrainConfig, epoch: int, it: int) -> float:
    """Linear warm-up over the first ``warmup_iters`` steps, then ×0.1 after each ``lr_steps`` epoch."""
    lr = cfg.lr * (0.1 ** sum(epoch >= s for s in cfg.lr_steps))
    if cfg.warmup_iters and it < cfg.warmup_iters:
        lr *= 0.001 + (1 - 0.001) * it / cfg.warmup_iters
    return lr


def build_trainable(cfg: DetectorTrainConfig, num_classes: int):
    weights = None
    if cfg.backbone_weights == "imagenet":
        import torchvision
        enum_name = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
                     "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights"}
        backbone = cfg.arch.removesuffix("_fpn")
        weights = getattr(torchvision.models, enum_name[backbone]).IMAGENET1K_V1
    model = build_faster_rcnn(cfg.arch_spec(), num_classes, trainable=True,
                              trainable_layers=cfg.trainable_layers,
                              backbone_weights=weights if cfg.backbone_weights == "imagenet" else None,
                              rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
                              box_batch_size_per_image=cfg.box_batch_size_per_image)
    if cfg.backbone_weights == "synthetic":
        raise ValueError("detector.backbone_weights=synthetic names the synthetic pretraining, "
                         "which a suite's runner prepares (gmbench.pretrain); here pass its file "
                         "(gmbench.pretrain.weights_path) instead")
    if cfg.backbone_weights not in ("imagenet", "none"):
        from ..models.backbone import load_state_dict_file
        state = {k: v for k, v in load_state_dict_file(cfg.backbone_weights).items()
                 if not k.startswith("fc.")}
        missing, unexpected = model.backbone.body.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"detector.backbone_weights {cfg.backbone_weights} does not fit "
                             f"{cfg.arch}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


@torch.no_grad()
def predict_split(model, labels: LabelSet, batch_size: int, progress: bool = False) -> List[dict]:
    """Detections (boxes xyxy in image pixels, scores, labels 1..C) for every image of a split."""
    model.eval()
    ds = BoxImages(labels, range(len(labels)))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=_collate)
    out = []
    from tqdm import tqdm
    for imgs, _ in tqdm(loader, desc="detector eval", leave=False, disable=not progress):
        for d in model(imgs):
            out.append({k: d[k].cpu().numpy() for k in ("boxes", "scores", "labels")})
    return out


def evaluate_ap(model, labels: LabelSet, batch_size: int, progress: bool = False) -> Dict[str, float]:
    from .evaluate import coco_box_ap
    dets = predict_split(model, labels, batch_size, progress)
    ds = BoxImages(labels, range(len(labels)))
    gts = [ds[i][1] for i in range(len(ds))]
    sizes = [tuple(ds[i][0].shape[-1:-3:-1]) for i in range(len(ds))]
    return coco_box_ap([g["boxes"].numpy() for g in gts], [g["labels"].numpy() - 1 for g in gts],
                       sizes, dets, labels.num_classes)


def train_detector(cfg: DetectorTrainConfig, train: LabelSet, test: Optional[LabelSet], out: Path,
                   *, dataset: str, train_split: str, test_split: Optional[str], data_config: dict,
                   progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train (or resume, or find finished) a detector in ``out``; returns its record."""
    out = Path(out)
    if cfg.seed == "run":
        raise ValueError("detector.seed=run takes the seed of the suite run that trains the "
                         "detector; outside a suite set an integer (detector.seed=0)")
    ident = {"detector": cfg.model_dump(mode="json"), "dataset": dataset, "split": train_split,
             "data": data_config}
    h = config_digest(ident)
    rec_path = out / "record.json"
    if rec_path.exists():
        rec = json.loads(rec_path.read_text())
        if rec.get("config_hash") == h and (out / "detector.pth").exists():
            return rec
        raise ValueError(f"{out} holds a detector trained with other settings (config hash "
                         f"{rec.get('config_hash')} != {h}); pass another --out or delete it")
    require_boxes(train, dataset, train_split)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    C = train.num_classes
    model = build_trainable(cfg, C + 1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    n = len(train) if cfg.max_train_images is None else min(len(train), cfg.max_train_images)
    ds = BoxImages(train, range(n), hflip=cfg.hflip, seed=cfg.seed)
    steps = math.ceil(n / cfg.batch_size)
    ckpt_dir = out / "checkpoints"
    epoch, step, history, t_train = 0, 0, [], 0.0
    ck = checkpoint.load_latest(ckpt_dir)
    if ck is not None:
        if ck.get("config_hash") != h:
            raise ValueError(f"checkpoints in {ckpt_dir} belong to other settings; delete them or "
                             f"pass another --out")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        checkpoint.set_rng_state(ck["rng"])
        epoch, step, history, t_train = ck["epoch"], ck["step"], ck["history"], ck["train_s"]
        log(f"detector: resuming {out} at epoch {epoch + 1}, step {step}")

    def save(ep, st):
        checkpoint.save(ckpt_dir, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                   "rng": checkpoint.rng_state(), "epoch": ep, "step": st,
                                   "history": history, "train_s": t_train, "config_hash": h},
                        cfg.keep_last)

    from tqdm import tqdm
    while epoch < cfg.epochs:
        model.train()
        ds.epoch = epoch
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).tolist()
        batches = [order[j:j + cfg.batch_size] for j in range(0, n, cfg.batch_size)][step:]
        loader = torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=_collate,
                                             num_workers=cfg.num_workers)
        if step == 0:
            history.append({"epoch": epoch + 1, "losses": []})
        bar = tqdm(loader, total=len(batches), desc=f"detector epoch {epoch + 1}/{cfg.epochs}",
                   leave=False, disable=not progress)
        t0, bad = time.perf_counter(), 0
        for imgs, targets in bar:
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, epoch, epoch * steps + step)
            losses = model(imgs, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                bad += 1
                if bad >= 5:
                    raise RuntimeError(f"detector training diverged (non-finite loss 5 steps in a "
                                       f"row at epoch {epoch + 1}); lower detector.lr")
                opt.zero_grad(set_to_none=True)
                step += 1
                continue
            bad = 0
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            history[-1]["losses"].append(round(float(loss), 5))
            bar.set_postfix(loss=f"{float(loss):.3f}")
            if cfg.ckpt_every_steps and step % cfg.ckpt_every_steps == 0 and step < steps:
                t_train += time.perf_counter() - t0
                t0 = time.perf_counter()
                save(epoch, step)
        t_train += time.perf_counter() - t0
        ls = history[-1]["losses"]
        history[-1]["mean_loss"] = float(np.mean(ls)) if ls else None
        log(f"detector epoch {epoch + 1}/{cfg.epochs}: loss {history[-1]['mean_loss']:.4f}")
        epoch, step = epoch + 1, 0
        save(epoch, 0)
    ap, t_eval = None, 0.0
    if cfg.evaluate and test is not None:
        t0 = time.perf_counter()
        try:
            ap = evaluate_ap(model, test, cfg.extract_batch_size, progress)
            shown = "n/a (no boxes)" if ap["AP50"] is None else f"{100 * ap['AP50']:.1f}"
            log(f"detector box AP@0.5 on {dataset}/{test_split}: {shown}")
        except ImportError as e:  # the weights are still good; say why AP is missing
            ap = {"AP50": None, "AP": None, "error": str(e)}
            log(f"warning: no box AP: {e}")
        t_eval = time.perf_counter() - t0
    trained_on = {"dataset": dataset, "split": train_split, "n_images": n, "data_config": data_config}
    weights = out / "detector.pth"
    save_detector_file(weights, model, {
        "arch": cfg.arch_spec(), "num_classes": C + 1, "class_names": list(train.class_names),
        "trained_on": trained_on, "config": cfg.model_dump(mode="json"), "config_hash": h,
        "ap50": None if ap is None else ap["AP50"]})
    rec = {"status": "finished", "arch": arch_name(cfg.arch_spec()), "config": cfg.model_dump(mode="json"),
           "config_hash": h, "trained_on": trained_on, "eval_split": test_split if ap is not None else None,
           "box_ap": ap, "history": history,
           "weights": str(weights), "sha256": sha256_file(weights),
           "timing": {"train_s": round(t_train, 2), "eval_s": round(t_eval, 2),
                      "threads": torch.get_num_threads()},
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(rec_path, rec)
    return rec
