"""``--dry-run`` cost: the images each run processes and an estimate of its GPU hours.

The rates come from THROUGHPUT below, which mirrors docs/performance.md, section
"Throughput table (for --dry-run estimates)"; change both together. Every figure names
where it came from: "measured" rows are the H200 session's (docs/performance.md, "Paper
suites: epoch time per method"), the others are assumed. The output says it is an estimate.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

GPU = "NVIDIA H200 (torch 2.11, bf16 autocast, 8 loader workers)"

# family → (input px, train img/s, eval img/s, source). Train: "img/s" of the H200 table;
# eval: its "eval s, total" read as two evaluations of 512 images (1,024 / s).
THROUGHPUT: Dict[str, Tuple[int, float, float, str]] = {
    "resnet": (448, 215.0, 406.0, "measured (ResNet-101 GMP/GAP)"),
    "ml_gcn": (448, 205.0, 394.0, "measured"),
    "ssgrl": (576, 95.0, 131.0, "measured"),
    "gm_mlic/cache": (448, 353.0, 341.0, "measured (head on cached m = 35 instances)"),
    "gm_mlic/e2e": (448, 126.0, 244.0, "measured (ResNet-101 + RoIAlign)"),
    "gm_mlic/online": (448, 353.0, 341.0,
                       "head: measured as cache mode; + the detector at ~100 img/s, estimated"),
    "gm_mlic/views": (448, 353.0, 341.0, "head: measured as cache mode; + the views extraction "
                                         "once (K × train + test images) at the detector's rate"),
    "csra": (448, 215.0, 406.0, "assumed: as resnet (same trunk, loader-bound)"),
    "q2l": (448, 215.0, 406.0, "assumed: as resnet"),
    "asl": (448, 215.0, 406.0, "assumed: as resnet"),
    "ml_decoder": (448, 215.0, 406.0, "assumed: as resnet"),
    "other": (448, 215.0, 406.0, "assumed: as resnet"),
}
# Faster R-CNN R50-FPN of online mode: 88 img/s measured at 800×1067 (batch 8, fp32);
# a 448² crop resized to 800×800 has 0.75× the pixels → about 100 img/s (estimate).
DETECTOR_RATE = (100.0, "estimated from 88 img/s measured at 800×1067")

# Images per split where a dry run may not read the annotations (the configs' counts).
SPLIT_SIZES = {("coco2014", "train"): 82081, ("coco2014", "val"): 40137,
               ("voc2007", "trainval"): 5011, ("voc2007", "test"): 4952,
               ("nuswide", "train"): 161789, ("nuswide", "test"): 107859}


def family(cfg) -> str:
    name = cfg.model.name
    if name == "gm_mlic":
        return f"gm_mlic/{getattr(cfg.model, 'features', 'cache')}"
    return name if name in THROUGHPUT else "other"


def split_size(d, split: str) -> Optional[int]:
    if d.name == "synthetic":
        return {"train": d.n_train, "test": d.n_test}.get(split)
    return SPLIT_SIZES.get((d.name, split))


def run_cost(cfg) -> dict:
    """Images trained / evaluated / passed through the online detector, and GPU hours."""
    d, t = cfg.data, cfg.train
    n_train, n_test = split_size(d, d.train_split), split_size(d, d.test_split)
    evals = t.epochs * (2 if t.ema is not None else 1)  # EMA rows evaluate raw and averaged
    fam = family(cfg)
    px, tr_rate, ev_rate, source = THROUGHPUT[fam]
    scale = (px / d.image_size) ** 2  # rates taken as ∝ 1 / pixels
    out = {"family": fam, "source": source, "n_train": n_train, "n_test": n_test,
           "trained": None, "evaluated": None, "detector": 0, "gpu_h": None,
           "extraction": None, "extraction_h": None, "extraction_key": None}
    if n_train is None or n_test is None:
        return out
    out["trained"], out["evaluated"] = t.epochs * n_train, evals * n_test
    seconds = out["trained"] / (tr_rate * scale) + out["evaluated"] / (ev_rate * scale)
    if fam == "gm_mlic/online":
        out["detector"] = out["trained"] + out["evaluated"]
        seconds += out["detector"] / DETECTOR_RATE[0]
    if fam == "gm_mlic/views":  # once per views cache, shared by every run that reads it
        from ..instances.source import views_key
        out["extraction"] = cfg.model.views * n_train + n_test
        out["extraction_h"] = out["extraction"] / DETECTOR_RATE[0] / 3600
        out["extraction_key"] = views_key(cfg)
    out["gpu_h"] = seconds / 3600
    return out


def _n(x) -> str:
    return "?" if x is None else f"{x:,}"


def describe_cost(runs: Sequence, done: Optional[set] = None) -> str:
    """Per run and suite: images processed and the estimated GPU hours (the runs in
    ``done``, finished already, cost nothing more)."""
    done = done or set()
    lines = [f"cost (ESTIMATE from the throughput table of docs/performance.md; rates measured "
             f"or assumed on one {GPU}, scaled by 1/pixels to each run's input size):"]
    tot = {"trained": 0, "evaluated": 0, "detector": 0, "gpu_h": 0.0, "left_h": 0.0}
    unknown: List[str] = []
    extractions: Dict[str, Tuple[int, float]] = {}  # views cache key → (passes, GPU-h), once
    for r in runs:
        c = run_cost(r.cfg)
        det = f", {_n(c['detector'])} detector passes" if c["detector"] else ""
        if c["extraction_key"] is not None:
            first = c["extraction_key"] not in extractions
            extractions[c["extraction_key"]] = (c["extraction"], c["extraction_h"])
            det += (f"; views extraction {'(once, counted here)' if first else '(shared, counted above)'}: "
                    f"{r.cfg.model.views} × {_n(c['n_train'])} + {_n(c['n_test'])} = "
                    f"{_n(c['extraction'])} detector passes ≈ {c['extraction_h']:.2f} GPU-h")
        h = "? GPU-h (split size unknown)" if c["gpu_h"] is None else f"≈ {c['gpu_h']:.2f} GPU-h"
        mark = " [done]" if r.run_id in done else ""
        lines.append(f"  {r.row.label!r} seed {r.seed}{mark}: {r.cfg.train.epochs} epochs × "
                     f"{_n(c['n_train'])} images = {_n(c['trained'])} trained, "
                     f"{_n(c['evaluated'])} evaluated{det}; {h} [{c['family']}: {c['source']}]")
        if c["gpu_h"] is None:
            unknown.append(r.row.label)
            continue
        for k in ("trained", "evaluated", "detector", "gpu_h"):
            tot[k] += c[k]
        if r.run_id not in done:
            tot["left_h"] += c["gpu_h"]
    for passes, h in extractions.values():  # one-time views extractions (not in left_h if done)
        tot["detector"] += passes
        tot["gpu_h"] += h
        tot["left_h"] += h
    lines.append(f"suite total: {_n(tot['trained'])} images trained, {_n(tot['evaluated'])} "
                 f"evaluated, {_n(tot['detector'])} detector passes; ≈ {tot['gpu_h']:.1f} GPU-hours "
                 f"estimated ({tot['left_h']:.1f} still to run; on N GPUs with --workers N "
                 f"about that / N)" + (f"; unknown for {', '.join(dict.fromkeys(unknown))}"
                                       if unknown else ""))
    return "\n".join(lines)
