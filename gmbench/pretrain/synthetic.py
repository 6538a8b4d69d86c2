"""The synthetic pretraining: a ResNet trained once on generated images, cached like a hub file.

The demo mirrors the real protocol, where every method's trunk (and the detector's) starts
from ImageNet weights: here they start from a ResNet trained on a disjoint synthetic split
(:mod:`gmbench.pretrain.config`). The verbs, as for a row's detector
(:mod:`gmbench.instances.source`):

* :func:`check` — at validation: fill in the default block where a run uses it, refuse a
  block nothing uses and a depth that does not fit;
* :func:`prepare` — before a run (a shared stage the launch queue claims once): train, or
  find in the cache, the weights of a block;
* :func:`resolve_model` / :func:`resolve_detector` — the model / detector config with
  ``synthetic`` replaced by the prepared file (the run's own config keeps ``synthetic``);
* :func:`describe` — the ``pretraining`` entry of a record's ``protocol`` block.

Cache (``GMBENCH_CACHE``, default ``~/.cache/gmbench``)::

    pretrain/synthetic-resnet18-<digest>.pth    {"format", "digest", "settings", "state_dict"}
    pretrain/synthetic-resnet18-<digest>.json   manifest: settings, sha256, val mAP, losses

``<digest>`` is :func:`gmbench.utils.io.config_digest` of the block's key settings. The weights
are written first, the manifest last (both atomically), so a manifest means a complete file;
a reader checks the file's sha256 against it and the digest inside the file, and loads it with
``weights_only=True``.
"""
from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple

import numpy as np

from ..models.instance_settings import instance_settings
from ..utils.io import atomic_torch_save, atomic_write_json, cache_home, config_digest, sha256_file
from .config import FORMAT, SYNTHETIC, SyntheticPretrainConfig

if TYPE_CHECKING:
    import torch

TRAIN_SPLIT_ID, VAL_SPLIT_ID = 3, 4  # the dataset's own splits use 1 (train) and 2 (test)
_PREPARED: Dict[str, dict] = {}      # digest -> prepare()'s result, once per process


def digest(p: SyntheticPretrainConfig) -> str:
    return config_digest(p.key_settings())


def cache_root() -> Path:
    return cache_home() / "pretrain"


def weights_path(p: SyntheticPretrainConfig) -> Path:
    return cache_root() / f"synthetic-resnet{p.depth}-{digest(p)}.pth"


def manifest_path(p: SyntheticPretrainConfig) -> Path:
    return weights_path(p).with_suffix(".json")


# -- which parts of a run use it (validation) ------------------------------------------------

def trunk_uses(cfg) -> bool:
    """The run's own trunk starts from the synthetic pretraining (GM-MLIC has a trunk only
    in e2e mode; elsewhere its ``pretrained`` key is unused)."""
    m = cfg.model
    inst = instance_settings(m)
    return getattr(m, "pretrained", None) == SYNTHETIC and (inst is None or inst.features == "e2e")


def detector_uses(cfg) -> bool:
    det = getattr(cfg, "detector", None)
    return det is not None and det.backbone_weights == SYNTHETIC


def check(cfg) -> Optional[SyntheticPretrainConfig]:
    """The ``pretrain`` block a validated run config should carry: the given one, the default
    one where ``synthetic`` is asked for without a block, None where nothing uses it.
    ValueError for a block nothing uses and for a trunk the weights do not fit."""
    trunk, det = trunk_uses(cfg), detector_uses(cfg)
    p = cfg.pretrain
    if not (trunk or det):
        if p is not None:
            raise ValueError("config key 'pretrain' is set, but nothing in this run uses it: set "
                             "model.pretrained=synthetic or detector.backbone_weights=synthetic, or "
                             "remove the pretrain block")
        return None
    p = p or SyntheticPretrainConfig()
    m = cfg.model
    if trunk and getattr(m, "backbone", None):
        raise ValueError(f"model.pretrained=synthetic is a torchvision ResNet-{p.depth}; it does not "
                         f"fit model.backbone={m.backbone}: set model.backbone=null")
    if trunk and getattr(m, "depth", p.depth) != p.depth:
        raise ValueError(f"model.pretrained=synthetic trains a ResNet-{p.depth} (pretrain.depth) but "
                         f"model.depth={m.depth}; make them equal")
    if det and cfg.detector.arch != f"resnet{p.depth}_fpn":
        raise ValueError(f"detector.backbone_weights=synthetic trains a ResNet-{p.depth} "
                         f"(pretrain.depth) but detector.arch={cfg.detector.arch}; use "
                         f"resnet{p.depth}_fpn or set pretrain.depth")
    return p


# -- the images ------------------------------------------------------------------------------

def render_split(p: SyntheticPretrainConfig, split_id: int, n: int) -> Tuple["torch.Tensor", np.ndarray]:
    """``n`` images of the generator's stream ``split_id`` as the dataset would feed them:
    rendered, JPEG-encoded (quality 95, as the dataset's files), resized and normalised by the
    ``plain`` transform. Returns (float [n, 3, S, S], int8 targets [n, C])."""
    import torch
    from PIL import Image

    from ..data.synthetic import SyntheticConfig, _World, render_image
    from ..data.transforms import build_transform
    dcfg = SyntheticConfig(seed=p.data_seed, num_classes=p.num_classes, resolution=p.resolution,
                           n_scenes=p.n_scenes, clutter=p.clutter, image_size=p.image_size)
    world = _World(dcfg)
    tf = build_transform("plain", p.image_size, False)
    xs, ys = [], np.zeros((n, p.num_classes), dtype=np.int8)
    for i in range(n):
        img, objs = render_image(world, dcfg, split_id, i)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        buf.seek(0)
        with Image.open(buf) as im:
            xs.append(tf(im.convert("RGB")))
        for c, _ in objs:
            ys[i, c] = 1
    return torch.stack(xs), ys


# -- training --------------------------------------------------------------------------------

def lr_at(p: SyntheticPretrainConfig, step: int, total: int, per_epoch: int) -> float:
    """Linear warm-up over ``warmup_epochs``, then cosine decay to 0 at ``total`` steps."""
    warm = int(round(p.warmup_epochs * per_epoch))
    if step < warm:
        return p.lr * (step + 1) / warm
    return p.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def train(p: SyntheticPretrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train the ResNet of ``p`` on its synthetic images. Returns {"state_dict" (the whole
    torchvision ResNet, fc included), "val_mAP", "losses" (per epoch), "seconds"}."""
    import torch
    import torchvision

    from ..metrics import evaluate
    t0 = time.perf_counter()
    x, y = render_split(p, TRAIN_SPLIT_ID, p.n_images)
    xv, yv = render_split(p, VAL_SPLIT_ID, p.n_val)
    target = torch.from_numpy(y).float()
    torch.manual_seed(p.seed)
    gen = torch.Generator().manual_seed(p.seed)
    net = getattr(torchvision.models, f"resnet{p.depth}")(weights=None, num_classes=p.num_classes)
    opt = torch.optim.SGD(net.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    per_epoch = math.ceil(p.n_images / p.batch_size)
    total, step, losses = p.epochs * per_epoch, 0, []
    net.train()
    for epoch in range(p.epochs):
        order, run = torch.randperm(p.n_images, generator=gen), 0.0
        flip = torch.rand(p.n_images, generator=gen) < (0.5 if p.hflip else 0.0)
        for b in range(per_epoch):
            idx = order[b * p.batch_size:(b + 1) * p.batch_size]
            xb = torch.where(flip[idx, None, None, None], x[idx].flip(-1), x[idx])
            for g in opt.param_groups:
                g["lr"] = lr_at(p, step, total, per_epoch)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xb), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run += float(loss) * len(idx)
            step += 1
        losses.append(round(run / p.n_images, 5))
        log(f"   pretraining epoch {epoch + 1}/{p.epochs}: loss {losses[-1]:.4f}")
    net.eval()
    with torch.no_grad():
        probs = torch.cat([torch.sigmoid(net(xv[i:i + 256])) for i in range(0, len(xv), 256)])
    val = evaluate(probs.numpy(), yv)["mAP"]
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return {"state_dict": state, "val_mAP": float(val), "losses": losses,
            "seconds": round(time.perf_counter() - t0, 2)}


# -- the cache -------------------------------------------------------------------------------

def _manifest(p: SyntheticPretrainConfig) -> Optional[dict]:
    import json
    try:
        return json.loads(manifest_path(p).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load(p: SyntheticPretrainConfig) -> Dict[str, "torch.Tensor"]:
    """The cached ResNet state dict of ``p`` (fc included), verified: the manifest's sha256,
    the digest written inside the file, ``weights_only=True``. WeightsError otherwise."""
    from ..errors import WeightsError
    from ..models.weights import load_weights_file
    path, man, key = weights_path(p), _manifest(p), digest(p)
    redo = f"Delete {path} and {manifest_path(p)} so that the next run trains it again."
    if man is None or not path.is_file():
        raise WeightsError(f"synthetic pretraining {key} is not in the cache ({path}); "
                           f"gmbench run prepares it (gmbench.pretrain.prepare)")
    if sha256_file(path) != man.get("sha256"):
        raise WeightsError(f"weights file {path} does not match its manifest's sha256. {redo}")
    obj = load_weights_file(path, redo)
    if obj.get("format") != FORMAT or obj.get("digest") != key:
        raise WeightsError(f"weights file {path} is not synthetic pretraining {key} "
                           f"(format {obj.get('format')!r}, digest {obj.get('digest')!r}). {redo}")
    return obj["state_dict"]


def prepare(p: SyntheticPretrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train the weights of ``p`` unless the cache holds them. Rank 0 works, other ranks wait
    and read its manifest. Returns {"weights", "sha256", "digest", "val_mAP", "seconds",
    "trained"} ("trained": False when the cache had them)."""
    from ..utils import dist
    from ..utils.env import torch_threads
    key = digest(p)
    if key in _PREPARED:
        return _PREPARED[key]
    path = weights_path(p)
    if not dist.is_main():
        dist.barrier()
    try:
        man = _manifest(p)
        trained = False
        if dist.is_main() and (man is None or not path.is_file()
                               or sha256_file(path) != man.get("sha256")):
            with torch_threads(p.num_threads):
                log(f"   synthetic pretraining {key}: ResNet-{p.depth} on {p.n_images} generated "
                    f"images (world seed {p.data_seed}), {p.epochs} epochs → {path}")
                res = train(p, log)
            atomic_torch_save({"format": FORMAT, "digest": key, "settings": p.key_settings(),
                               "state_dict": res["state_dict"]}, path)
            man = {"format": FORMAT, "digest": key, "settings": p.key_settings(),
                   "weights": str(path), "sha256": sha256_file(path), "val_mAP": res["val_mAP"],
                   "losses": res["losses"], "seconds": res["seconds"],
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            atomic_write_json(manifest_path(p), man)
            trained = True
            log(f"   pretraining done in {res['seconds']:.0f}s: mAP {100 * res['val_mAP']:.1f} on "
                f"{p.n_val} held-out synthetic images")
    finally:
        if dist.is_main():
            dist.barrier()
    man = _manifest(p)
    _PREPARED[key] = {"weights": str(path), "sha256": man["sha256"], "digest": key,
                      "val_mAP": man.get("val_mAP"), "seconds": man.get("seconds"), "trained": trained}
    return _PREPARED[key]


# -- what a run builds from it, and what its record says -------------------------------------

def _file(cfg) -> str:
    """The prepared weights file of a run's block (prepare() must have run in this process)."""
    done = _PREPARED.get(digest(cfg.pretrain))
    if done is None:
        raise RuntimeError("this run's synthetic pretraining has not been prepared; call "
                           "gmbench.pretrain.prepare(cfg.pretrain) first")
    return done["weights"]


def resolve_model(cfg):
    """The model config to build: ``model.pretrained: synthetic`` → the prepared file."""
    return cfg.model.model_copy(update={"pretrained": _file(cfg)}) if trunk_uses(cfg) else cfg.model


def resolve_detector(cfg):
    """The detector config to train: ``backbone_weights: synthetic`` → the prepared file."""
    if not detector_uses(cfg):
        return cfg.detector
    return cfg.detector.model_copy(update={"backbone_weights": _file(cfg)})


def describe(cfg) -> Optional[dict]:
    """The record's ``protocol.pretraining``: None unless a trunk starts from the synthetic
    pretraining; else which trunks do, the settings, their digest, and the file."""
    p = getattr(cfg, "pretrain", None)
    if p is None:
        return None
    used = (["trunk"] if trunk_uses(cfg) else []) + (["detector backbone"] if detector_uses(cfg) else [])
    done = _PREPARED.get(digest(p), {})
    return {"source": "synthetic", "digest": digest(p), "used_by": used,
            "weights": done.get("weights", str(weights_path(p))), "sha256": done.get("sha256"),
            "val_mAP": done.get("val_mAP"), "settings": p.key_settings(),
            "images": (f"synthetic generator, world seed {p.data_seed}, image streams "
                       f"{TRAIN_SPLIT_ID}/{VAL_SPLIT_ID} (the dataset's train/test are 1/2): "
                       f"disjoint from every train and test image")}
