"""Suites: rows (method × dataset × settings) × seeds → runs.jsonl → tables.

A suite YAML (configs/suites/NAME.yaml)::

    name: demo
    seeds: [0]
    defaults: {train: {epochs: 6}}       # every row, after method/dataset layers
    table: {columns: [mAP, CF1, OF1], chance: true}
    rows:
      - {label: "ResNet-18 GMP", method: resnet, dataset: synthetic, set: {model.pool: max}}

Rows refer to configs/methods/*.yaml and configs/datasets/*.yaml by name; an
ablation is a row whose ``set`` overrides settings.

A run's identity is the hash of (suite, row label, seed, resolved config): its
checkpoints live in ``OUT/SUITE/checkpoints/<run_id>/`` and its record carries
the same ``run_id``, so a rerun with any changed setting never resumes or skips
on the strength of an old run (see ``docs/architecture.md``, "Run identity").
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from . import config as C
from . import pretrain
from .instances import source as instances
from .tables.figures import FigureSpec
from .utils import signals
from .records import (append_record, config_changes, config_hash,  # noqa: F401
                      finished_records, replace_stale, run_id, stale_records)
from .utils.io import atomic_write_json, safe_name


class TableSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    columns: List[str] = ["mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "CF1@3", "OF1@3"]
    chance: bool = True              # a column with the chance-level mAP (label frequency)
    reference: Optional[str] = None  # published numbers (results/reference/*.yaml), issue 9
    group_header: Optional[Dict[str, List[str]]] = None
    figure: Optional[FigureSpec] = None  # a sweep plot next to the tables (gmbench/tables/figures.py)
    # The epoch each run contributes: final (default), best or best_of_ema (both selection on
    # the test split, flagged in the table notes); `gmbench table --select` overrides it.
    select: Literal["final", "best", "best_of_ema"] = "final"


class RowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str
    method: str
    dataset: str
    set: Dict[str, Any] = {}
    seeds: Optional[List[int]] = None
    reference: Optional[str] = None  # the published row this reproduces
    table_row: Optional[str] = None  # rows sharing it fill one table row (<dataset>/<key> columns)


class SuiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    seeds: List[int] = [0]
    defaults: Dict[str, Any] = {}
    table: TableSpec = TableSpec()
    rows: List[RowSpec]


@dataclass
class PlannedRun:
    suite: str
    row: RowSpec
    row_index: int
    seed: int
    cfg: C.RunConfig

    @property
    def key(self):
        return (self.row.label, self.seed)

    @property
    def run_id(self) -> str:
        return run_id(self.suite, self.row.label, self.seed, C.to_dict(self.cfg))


def load_suite(name: str) -> SuiteSpec:
    path = C.named_yaml("suites", name)
    try:
        suite = SuiteSpec.model_validate(C.load_yaml(path))
    except ValidationError as e:
        raise C.ConfigError(f"{path}:\n" + C._explain(e, SuiteSpec, "")) from None
    try:
        safe_name(suite.name, "suite name")
    except ValueError as e:
        raise C.ConfigError(f"{path}: {e}") from None
    return suite


def _label_key(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", label.casefold())


def plan(suite: SuiteSpec, overrides: Dict[str, Any], device: Optional[str] = None,
         row_overrides: Optional[Dict[str, Dict[str, Any]]] = None) -> List[PlannedRun]:
    """Resolve and validate every run of the suite before any work starts.
    ``row_overrides``: {row label: overrides} applied after ``overrides`` (gmbench.selection)."""
    from .reference import check_suite
    check_suite(suite)
    runs, labels = [], set()
    cli = dict(overrides)
    if device:
        cli = C.deep_merge(cli, {"device": device})
    seen: Dict[str, str] = {}
    for i, row in enumerate(suite.rows):
        if row.label in labels:
            raise C.ConfigError(f"suite {suite.name!r}: row label {row.label!r} appears twice")
        other = seen.get(_label_key(row.label))
        if other is not None:
            raise C.ConfigError(f"suite {suite.name!r}: row labels {other!r} and {row.label!r} differ "
                                f"only in case, spaces or punctuation; make them clearly different")
        labels.add(row.label)
        seen[_label_key(row.label)] = row.label
        for seed in row.seeds or suite.seeds:
            raw = C.compose(row.method, row.dataset, suite.defaults,
                            C.dotted_to_nested(row.set), {"seed": seed}, cli,
                            (row_overrides or {}).get(row.label, {}))
            try:
                cfg = C.validate(raw)
            except C.ConfigError as e:
                raise C.ConfigError(f"suite {suite.name!r}, row {row.label!r}: {e}") from None
            runs.append(PlannedRun(suite.name, row, i, seed, cfg))
    return runs


def describe_plan(suite: SuiteSpec, runs: List[PlannedRun], out_dir: Path) -> str:
    """Human-readable plan for --dry-run: rows, seeds, every setting that differs between
    the runs, and the files each dataset needs."""
    from .data import get_spec
    from .selection import differing_settings
    diffs = differing_settings(runs)
    lines = [f"suite {suite.name}: {len(suite.rows)} rows, {len(runs)} runs → {out_dir / suite.name}"]
    done = finished_records(out_dir / suite.name / "runs.jsonl")
    seen, missing = set(), 0
    for r, diff in zip(runs, diffs):
        d = r.cfg.data
        status = "done" if r.run_id in done else (
            "CHANGED" if any(x["row"] == r.row.label and x["seed"] == r.seed for x in done.values())
            else "todo")
        lines.append(f"  [{status}] {r.row.label!r} seed={r.seed}: method={r.row.method} "
                     f"(model {r.cfg.model.name}), dataset={r.row.dataset} ({d.name}), "
                     f"epochs={r.cfg.train.epochs}, batch={r.cfg.train.batch_size}, "
                     f"image_size={d.image_size}")
        if diff:
            lines.append("      differs: " + ", ".join(f"{k}={v}" for k, v in diff.items()))
        if (d.name, d.root) not in seen:
            seen.add((d.name, d.root))
            spec = get_spec(d.name)
            if spec.generated:
                lines.append("      data: generated on first use (no files needed)")
            elif not d.root:
                lines.append("      data: data.root is not set; expected layout:\n"
                             + "\n".join("        " + x for x in spec.layout.splitlines()))
            else:
                for split in (d.train_split, d.test_split):
                    for p in spec.expected_files(Path(d.root), split, d):
                        if p not in seen:
                            seen.add(p)
                            missing += not Path(p).exists()
                            lines.append(f"      {'ok' if Path(p).exists() else 'MISSING':7s} {p}")
        from .launch.cost import split_size
        for step in (pretraining_step(r.cfg),
                     instances.detector_step(r.cfg, Path(d.root) if d.root else None),
                     instances.views_step(r.cfg, Path(d.root) if d.root else None,
                                          split_size(d, d.train_split), split_size(d, d.test_split))):
            if step and step not in seen:
                seen.add(step)
                lines.append("      " + step)
        for what, p in _side_files(r.cfg, Path(d.root) if d.root else None):
            if p not in seen:
                seen.add(p)
                missing += not p.exists()
                lines.append(f"      {'ok' if p.exists() else 'MISSING':7s} {p}  ({what})")
    if missing:
        lines.append(f"{missing} file(s) missing. Check a dataset with `python -m gmbench data check "
                     f"NAME --root ROOT`; make instance caches with `python -m gmbench extract`.")
    return "\n".join(lines)


def pretraining_step(cfg: C.RunConfig) -> Optional[str]:
    """One dry-run line for a run's synthetic pretraining (None without one)."""
    p = cfg.pretrain
    if p is None:
        return None
    path = pretrain.weights_path(p)
    state = "cached" if path.with_suffix(".json").is_file() else "trained on first use"
    return (f"pretraining step: ResNet-{p.depth} on {p.n_images} synthetic images (world seed "
            f"{p.data_seed}, {p.epochs} epochs), {state}: {path}")


def _side_files(cfg: C.RunConfig, root: Optional[Path]) -> List[tuple]:
    """Files a run opens besides the annotations: GloVe, what its instances are read from
    (gmbench.instances.source.files) and its trunk's weights."""
    d, m = cfg.data, cfg.model
    out = [("GloVe word vectors", Path(d.glove).expanduser())] if d.glove else []
    out += instances.files(cfg, root)
    trunk = trunk_weights_file(m)
    if trunk is not None:
        out.append(("backbone weights", trunk))
    return out


def trunk_weights_file(m) -> Optional[Path]:
    """The file a method's trunk starts from: a path in ``model.pretrained``, or torchvision's
    ImageNet file in the hub cache for ``imagenet``; None for random init, for the synthetic
    pretraining (the runner makes it: ``pretraining step`` in the dry run) and for GM-MLIC
    outside e2e mode (it has no trunk of its own there)."""
    from .models.instance_settings import instance_settings
    pre, inst = getattr(m, "pretrained", "none"), instance_settings(m)
    if pre in ("none", pretrain.SYNTHETIC) or (inst is not None and inst.features != "e2e"):
        return None
    if pre != "imagenet":
        return Path(pre).expanduser()
    if getattr(m, "backbone", None) or getattr(m, "depth", None) is None:
        return None  # timm trunks take a file; build_timm names the error
    import torch
    import torchvision
    enum = getattr(torchvision.models, f"ResNet{m.depth}_Weights").IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name


def chance_map(targets) -> float:
    """Expected mAP of a random scorer: the mean positive rate over classes with positives."""
    import numpy as np
    t = np.asarray(targets)
    valid = t >= 0
    pos = (t == 1).sum(0)
    n = valid.sum(0)
    keep = pos > 0
    return float(np.mean(pos[keep] / n[keep])) if keep.any() else float("nan")


class _DataCache:
    """Labels, side information and datasets shared by rows with the same data config."""

    def __init__(self):
        self._store: Dict[str, Any] = {}

    def get(self, cfg: C.RunConfig):
        key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
        if key not in self._store:
            from .utils import dist
            # Rank 0 generates/caches first; the others then read what it wrote.
            if not dist.is_main():
                dist.barrier()
            self._store[key] = self._load(cfg)
            if dist.is_main():
                dist.barrier()
        return self._store[key]

    @staticmethod
    def _load(cfg: C.RunConfig):
        from .data import load_splits
        from .data.base import data_cache_dir
        from .data.side_info import build_data_info
        root, train, test = load_splits(cfg.data)
        return root, train, test, build_data_info(train, cfg.data, data_cache_dir(cfg.data, root))


def build_datasets(cfg: C.RunConfig, model, train, test, root: Path):
    from .data.dataset import ImageDataset
    from .data.transforms import build_transform
    d = cfg.data
    kw = dict(difficult=d.difficult, skip_bad_images=d.skip_bad_images,
              with_boxes=getattr(model, "needs_boxes", False))
    # The runner, not the model, opens instance caches / attaches the online detector.
    sources = instances.open_sources(model, cfg, root)
    for src, labels, split in ((sources[0], train, d.train_split), (sources[1], test, d.test_split)):
        if src is not None:  # a cache made for other images fails here, naming the first mismatch
            src.validate(labels.image_ids, dataset=d.name, split=split)
    # A model that reads cached features only: no image is decoded or augmented.
    load = [getattr(model, "needs_images", True) or src is None for src in sources]
    tf = [build_transform(d.train_transform, d.image_size, True),
          build_transform(d.test_transform, d.image_size, False)]
    tf = [instances.view_transform(cfg, t) for t in tf]  # + geometry where the detector needs it
    tr = ImageDataset(train, tf[0], instance_source=sources[0], seed=cfg.seed, load_image=load[0], **kw)
    te = ImageDataset(test, tf[1], instance_source=sources[1], load_image=load[1], **kw)
    return tr, te


def execute(run: PlannedRun, suite: SuiteSpec, out_dir: Path, data: _DataCache,
            log=print) -> Optional[dict]:
    """Train and evaluate one planned run; rank 0 appends its record. Returns the record."""
    import torch

    from . import engine
    from .registry import METHODS
    from .utils import dist
    from .utils.env import environment, resolve_device, seed_everything
    cfg = run.cfg
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    seed_everything(run.seed, cfg.train.deterministic)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    root, train, test, info = data.get(cfg)
    signals.check("data preparation")
    if cfg.train.global_batch_size and cfg.train.global_batch_size != cfg.train.batch_size * dist.world_size():
        raise C.ConfigError(
            f"train.global_batch_size={cfg.train.global_batch_size} but train.batch_size="
            f"{cfg.train.batch_size} × {dist.world_size()} processes = "
            f"{cfg.train.batch_size * dist.world_size()}; fix one of them")
    if cfg.pretrain is not None:  # the trunks' synthetic pretraining: trained once, then cached
        pretrain.prepare(cfg.pretrain, log)
    model = METHODS.get(cfg.model.name).fn(pretrain.resolve_model(cfg), info)
    instances.prepare(cfg, root, log)  # a row's detector: trained + extracted once, then cached
    tr, te = build_datasets(cfg, model, train, test, root)
    suite_dir = out_dir / suite.name
    resolved = C.to_dict(cfg)
    rid = run.run_id
    ckpt_dir = suite_dir / "checkpoints" / rid
    if dist.is_main() and not (ckpt_dir / "run.json").exists():
        atomic_write_json(ckpt_dir / "run.json", {"run_id": rid, "suite": suite.name,
                                                  "row": run.row.label, "seed": run.seed,
                                                  "config": resolved})
    result = engine.fit(model, tr, te, cfg, device, ckpt_dir, method=run.row.label, log=log,
                        tb_dir=suite_dir / "tb" / rid)
    preds = result.pop("predictions")
    metrics = dict(result.pop("metrics"))
    ap = metrics.pop("AP")
    for k in ("n_evaluated", "n_skipped"):
        metrics.pop(k, None)
    best = result.pop("best_metrics") or {}
    best = {k: v for k, v in best.items() if k not in ("AP", "n_evaluated", "n_skipped")} or None
    skipped = result.pop("skipped_images")
    n_eval = result.pop("n_evaluated")
    if skipped["test"]:
        log(f"warning: {skipped['test']} unreadable test image(s) of {run.row.dataset} were skipped "
            f"(data.skip_bad_images); {run.row.label!r} is evaluated on {n_eval} of {len(test)} images")
    record = {
        "status": "finished", "suite": suite.name, "row": run.row.label, "row_index": run.row_index,
        "method": run.row.method, "model": cfg.model.name, "dataset": run.row.dataset,
        "seed": run.seed, "run_id": rid, "reference": run.row.reference,
        "table_row": run.row.table_row or run.row.label,
        "metrics": metrics, "per_class_ap": dict(zip(info.class_names, ap)),
        "best_epoch": result.pop("best_epoch"), "best_metrics": best,
        "chance_mAP": chance_map(test.targets),
        "n_train": len(train), "n_test": n_eval if n_eval is not None else len(test),
        "n_test_listed": len(test), "skipped_images": skipped,
        "model_record": model.describe(), "embedding_source": info.embedding_source,
        "timing": {"wall_s": round(time.perf_counter() - t0, 3),
                   "train_s": result.pop("train_time_s"), "eval_s": result.pop("eval_time_s"),
                   "threads": torch.get_num_threads()},
        "train": result, "world_size": dist.world_size(),
        "global_batch_size": cfg.train.batch_size * dist.world_size(),
        "environment": environment(device), "config": resolved, "config_hash": config_hash(resolved),
        "table": suite.table.model_dump(), "row_order": [r.label for r in suite.rows],
        "protocol": _protocol(cfg, model),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if dist.is_main():
        from .predictions import write_predictions
        record["predictions"] = write_predictions(
            suite_dir, rid, [test.image_ids[i] for i in preds["index"]], preds["probs"],
            preds["targets"])
        if not append_record(suite_dir / "runs.jsonl", record):  # exactly once per run id
            log(f"   {rid} was already recorded (by another holder of this run); kept that record")
        from .utils.checkpoint import finish
        finish(ckpt_dir, cfg.train.keep_final_weights, log=log)
    dist.barrier()
    return record


def _protocol(cfg: C.RunConfig, model) -> dict:
    """The record's ``protocol`` block: what the run saw (gmbench.instances.source.describe),
    plus ``pretraining`` where a trunk started from the synthetic pretraining."""
    out = instances.describe(cfg, model)
    pre = pretrain.describe(cfg)
    return {**out, "pretraining": pre} if pre is not None else out


def run_suite(suite: SuiteSpec, runs: List[PlannedRun], out_dir: Path, formats=("csv", "md"),
              log=print, wait: bool = False, replace: bool = False, lease_s: Optional[float] = None,
              keep_going: bool = False, since: Optional[float] = None,
              prepared: bool = False) -> Path:
    """Run every unfinished run that no other process holds, then render the tables.
    Returns the suite directory.

    Runs are claimed one at a time (``SUITE/claims/``, gmbench/launch/claims.py), so any
    number of processes may work on one folder: ``--workers``, SLURM array tasks, a second
    ``gmbench run``. ``wait``: also wait for the runs that others hold (taking over any
    whose holder dies) so that the tables are complete on return. Before training, rank 0
    refuses rows whose finished record was made with another config, unless ``replace``
    moves those records aside (skipped when ``prepared``: a launcher did it). A signal in
    any phase ends the suite with :class:`signals.Interrupted`.
    """
    from .launch.claims import LEASE_S
    from .launch.queue import drain, prepare
    from .tables import write_tables
    from .utils import dist
    suite_dir = out_dir / safe_name(suite.name, "suite name")
    with signals.guard():
        if dist.is_main() and not prepared:
            prepare(suite.name, runs, suite_dir, replace, log)
        data = _DataCache()
        drain(suite, runs, suite_dir, execute, data, log, lease_s=lease_s or LEASE_S, wait=wait,
              keep_going=keep_going, since=since, out_dir=out_dir)
        if dist.is_main() and finished_records(suite_dir / "runs.jsonl"):
            write_tables(suite_dir, formats)  # `gmbench table` renders any time; so does a run
        signals.check("table rendering (the tables were written)")
    return suite_dir
