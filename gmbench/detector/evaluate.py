"""Box AP of a detector on a labelled split, with pycocotools' COCOeval.

The ground truth is the split's own boxes (``LabelSet.boxes`` / ``box_labels``,
class c → category c + 1); detections are in the same pixel frame.  COCOeval's
``stats[1]`` is AP at IoU 0.5 (all areas, 100 detections), ``stats[0]`` AP@[.5:.95].
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, List

import numpy as np


def _require_pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError("box AP needs pycocotools: `pip install pycocotools` (or "
                          "`pip install gmbench[detector]`), or set detector.evaluate=false") from None
    return COCO, COCOeval


def coco_box_ap(gt_boxes: List[np.ndarray], gt_labels: List[np.ndarray], sizes: List[tuple],
                dets: List[Dict[str, np.ndarray]], num_classes: int) -> Dict[str, float]:
    """AP@0.5 and AP@[.5:.95].

    gt_boxes[i] float [k_i, 4] xyxy pixels, gt_labels[i] int [k_i] in 0..C-1,
    sizes[i] = (width, height); dets[i] = dict(boxes [d, 4] xyxy, scores [d],
    labels [d] in 1..C).  Images without any box still count (false positives).
    """
    COCO, COCOeval = _require_pycocotools()
    images, anns, res = [], [], []
    for i, (b, lab, (w, h)) in enumerate(zip(gt_boxes, gt_labels, sizes)):
        images.append({"id": i + 1, "width": int(w), "height": int(h)})
        for box, c in zip(np.asarray(b, dtype=np.float64).reshape(-1, 4), np.asarray(lab).reshape(-1)):
            bw, bh = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                         "bbox": [float(box[0]), float(box[1]), float(bw), float(bh)],
                         "area": float(bw * bh), "iscrowd": 0})
    for i, d in enumerate(dets):
        for box, s, c in zip(np.asarray(d["boxes"], dtype=np.float64).reshape(-1, 4), d["scores"], d["labels"]):
            res.append({"image_id": i + 1, "category_id": int(c),
                        "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                 float(box[3] - box[1])], "score": float(s)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not res:
            return {"AP50": 0.0, "AP": 0.0, "n_detections": 0}
        ev = COCOeval(gt, gt.loadRes(res), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval reports -1 where no ground truth exists at all
    return {"AP50": float(ev.stats[1]) if ev.stats[1] >= 0 else None,
            "AP": float(ev.stats[0]) if ev.stats[0] >= 0 else None, "n_detections": len(res)}
