"""Instance recall of GM-MLIC's online detector per ``model.detector_input`` (issue 25, item 8).

Recall = the fraction of annotation boxes (inside the view, after the transform) matched by
one of the image's kept top-m instances at IoU >= 0.5, IoU taken in the original image's pixel
frame (so a squashed view is not favoured by its own distortion). Views: the test split
(plain resize) and one epoch of training views (ML-GCN multi-scale crop + flip, seeded as the
runner seeds them). Uses the detector that ``bench/detector_input.yaml`` trains (run that
suite first, or this script trains it through the same runner step).

    python bench/bench_detector_input.py [--suite bench/detector_input.yaml]
"""
from __future__ import annotations

import argparse
import json

import torch
from torchvision import tv_tensors
from torchvision.ops import box_iou

from gmbench import runner
from gmbench.data.dataset import sample_rng
from gmbench.data.geometry import _axis
from gmbench.data.transforms import build_transform
from gmbench.instances import source
from gmbench.instances.online import OnlineDetector, view_size  # noqa: F401
from gmbench.instances.extract import DetectorConfig


def views(labels, transform, seed, epoch, n):
    """[(image [3,H,W], geometry [6], annotation boxes [k,4] normalised in the view)]."""
    out = []
    for i in range(n):
        with sample_rng(seed, epoch, i):
            from PIL import Image
            with Image.open(labels.image_paths[i]) as im:
                img = im.convert("RGB")
            w, h = img.size
            ann = torch.as_tensor(labels.boxes[i], dtype=torch.float32).reshape(-1, 4)
            xs, ys = torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32)
            strips = torch.cat([torch.stack([xs, torch.zeros(w), xs + 1, torch.full((w,), float(h))], 1),
                                torch.stack([torch.zeros(h), ys, torch.full((h,), float(w)), ys + 1], 1)])
            bb = tv_tensors.BoundingBoxes(torch.cat([ann, strips]), format="XYXY", canvas_size=(h, w))
            image, tb = transform(img, bb)
        tb = tb.as_subclass(torch.Tensor)
        k = len(ann)
        s = tb[k:]
        ax, bx = _axis(s[:w, 0], s[:w, 2])
        ay, by = _axis(s[w:, 1], s[w:, 3])
        H, W = image.shape[-2:]
        a = tb[:k] / torch.tensor([W, H, W, H])
        keep = ((a[:, 2] - a[:, 0]) * W >= 1) & ((a[:, 3] - a[:, 1]) * H >= 1)
        out.append((image, torch.tensor([ax, bx, ay, by, w, h]), a[keep]))
    return out


def recall(det, items, bs=32):
    hit = total = 0
    for j in range(0, len(items), bs):
        chunk = items[j:j + bs]
        imgs = torch.stack([c[0] for c in chunk])
        geo = torch.stack([c[1] for c in chunk])
        boxes, mask, _ = det(imgs, geo)
        H, W = imgs.shape[-2:]
        for b, (_, g, ann) in enumerate(chunk):
            if not len(ann):
                continue
            px = torch.tensor([W / abs(g[0]), H / abs(g[2])] * 2)  # original pixels of the view
            pred = boxes[b][mask[b]] * px
            total += len(ann)
            if len(pred):
                hit += int((box_iou(ann * px, pred).max(1).values >= 0.5).sum())
    return hit / max(total, 1), total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="bench/detector_input.yaml")
    args = ap.parse_args()
    suite = runner.load_suite(args.suite)
    runs = runner.plan(suite, {})
    cfg = runs[0].cfg
    root, train, test, _ = runner._DataCache().get(cfg)
    weights = source.prepare(cfg, root)["weights"]
    d = cfg.data
    sets = {"test": views(test, build_transform(d.test_transform, d.image_size, False), 0, 0, len(test)),
            "train (epoch 0 views)": views(train, build_transform(d.train_transform, d.image_size, True),
                                           cfg.seed, 0, len(train))}
    res = {}
    for mode in ("squashed", "crop"):
        det = OnlineDetector(DetectorConfig(weights=weights), cfg.model.top_m, mode)
        for name, items in sets.items():
            r, n = recall(det, items)
            res[f"{mode} / {name}"] = {"recall@0.5": round(r, 4), "boxes": n}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
