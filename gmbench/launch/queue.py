"""A worker's loop: claim one unfinished run at a time, do its shared stages once, train it.

Any number of processes (``--workers``, SLURM array tasks, a second ``gmbench run`` on the
same ``--out``) drain one suite's queue together; :mod:`.claims` keeps each run, and each
shared stage, in one pair of hands. Under torch.distributed, rank 0 claims and the other
ranks follow its choice (broadcast), so a run is a unit whatever its world size.

This module sits below :mod:`gmbench.runner`: the runner hands in its ``execute`` and its
data cache, so nothing here imports the runner.
"""
from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..records import config_hash, finished_records
from ..utils import dist, progress, signals
from ..utils.io import TMP_PREFIX
from .claims import LEASE_S, Claim, Claims


class RunsFailed(RuntimeError):
    """Some runs raised; each has a failure marker and the traceback in its log."""


def _data_key(cfg) -> str:
    return "stage-data-" + config_hash(cfg.data.model_dump(mode="json"))


def stages_of(run, data) -> List[Tuple[str, Callable[[Callable], object]]]:
    """(claim key, fn(log)) of the work a run shares with other rows: its data (generation,
    side information), the synthetic pretraining its trunks start from (``pretrain:``), for a
    row with a ``detector:`` block, detector + instances, and for a views row, its views caches."""
    from ..instances import source as instances
    cfg = run.cfg
    out = [(_data_key(cfg), lambda log: data.get(cfg))]
    if getattr(cfg, "pretrain", None) is not None:
        from .. import pretrain
        out.append(("stage-pretrain-" + pretrain.digest(cfg.pretrain),
                    lambda log: pretrain.prepare(cfg.pretrain, log)))
    if getattr(cfg, "detector", None) is not None:
        out.append(("stage-detector-" + instances.detector_key(cfg),
                    lambda log: instances.prepare(cfg, data.get(cfg)[0], log)))
    key = instances.views_key(cfg)
    if key is not None:  # views mode: the views caches (after the detector, if the row trains one)
        out.append(("stage-views-" + key, lambda log: instances.prepare(cfg, data.get(cfg)[0], log)))
    return out


class RunLog:
    """The console log, also appended (with time stamps) to ``SUITE/logs/<run_id>.log``."""

    def __init__(self, log: Callable[[str], None], path: Optional[Path]):
        self.log, self.path = log, path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, text: str) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                for line in str(text).splitlines() or [""]:
                    f.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def __call__(self, msg: str = "", *a, **k) -> None:
        self.log(msg, *a, **k)
        self.write(msg)


def _clear_tmp(folder: Path) -> None:
    """Temp files of interrupted writes in a run's own folder (safe: its claim is held)."""
    if folder.is_dir():
        for p in folder.rglob(f"{TMP_PREFIX}*"):
            if p.is_file():
                p.unlink(missing_ok=True)


def drain(suite, runs: Sequence, suite_dir: Path, execute: Callable, data, log=print, *,
          lease_s: float = LEASE_S, wait: bool = False, keep_going: bool = False,
          since: Optional[float] = None, on_all_done: Optional[Callable[[], None]] = None,
          out_dir: Optional[Path] = None) -> Dict[str, list]:
    """Train every unfinished run of ``runs`` that no live process holds.

    ``wait``: also wait for runs that others hold (taking them over if their holder dies).
    ``keep_going``: a run that raises is marked failed and the loop goes on (RunsFailed at
    the end); otherwise the error propagates, as in a plain sequential run. Runs marked
    failed at or after ``since`` (this launch) are not retried by it.
    ``on_all_done``: called by the process that finishes the last of ``runs``.
    Returns {"trained", "failed", "held"} lists of run ids.
    """
    claims = Claims(suite_dir / "claims", lease_s)
    by_id = {r.run_id: r for r in runs}
    since = time.time() if since is None else since
    out_dir = out_dir or suite_dir.parent
    result: Dict[str, list] = {"trained": [], "failed": [], "held": []}
    skip: set = set()
    sleep = 0.5
    while True:
        claim, msg = None, None
        if dist.is_main():
            kind, run, claim = _next(runs, suite_dir, claims, data, skip, since, wait, log)
            msg = [kind, run.run_id if run is not None else None]
            if kind == "done":
                result["held"] = [r.run_id for r in runs if claims.holder(r.run_id)]
        msg = dist.broadcast_object(msg)
        if msg[0] == "done":
            break
        if msg[0] == "wait":
            signals.check("waiting for runs held by other processes")
            time.sleep(sleep)
            sleep = min(10.0, sleep * 1.5)
            continue
        sleep = 0.5
        run = by_id[msg[1]]
        ok = _run_one(run, suite, suite_dir, out_dir, claims, claim, execute, data, log, keep_going)
        (result["trained"] if ok else result["failed"]).append(run.run_id)
        skip.add(run.run_id)
        if ok and on_all_done is not None and dist.is_main():
            done = finished_records(suite_dir / "runs.jsonl")
            if all(r.run_id in done for r in runs):
                on_all_done()
    if result["failed"]:
        raise RunsFailed(f"{len(result['failed'])} run(s) failed: "
                         + ", ".join(f"{by_id[i].row.label!r} seed {by_id[i].seed}"
                                     for i in result["failed"])
                         + f"; see `gmbench status {suite_dir}` and {suite_dir / 'logs'}/")
    return result


def _next(runs, suite_dir: Path, claims: Claims, data, skip: set, since: float, wait: bool, log):
    """("run", run, claim) | ("wait", None, None) | ("done", None, None)."""
    done = finished_records(suite_dir / "runs.jsonl")
    pending = []
    for r in runs:
        if r.run_id in done or r.run_id in skip:
            continue
        failed = claims.failure(r.run_id)
        if failed and failed.get("time", 0) >= since:
            continue  # failed in this launch: a re-run of the command retries it
        pending.append(r)
    if not pending:
        return "done", None, None
    free, blocked, held = [], [], []
    for r in pending:
        if claims.holder(r.run_id):
            held.append(r)
        elif any(claims.holder(k) for k, _ in stages_of(r, data)):
            blocked.append(r)  # its data or detector is being made by someone else
        else:
            free.append(r)
    for r in free:
        c = claims.try_claim(r.run_id, log, row=r.row.label, seed=r.seed,
                             log_file=str(suite_dir / "logs" / f"{r.run_id}.log"))
        if c is not None:
            return "run", r, c
    if blocked or (held and wait):
        return "wait", None, None
    return "done", None, None


def _run_one(run, suite, suite_dir: Path, out_dir: Path, claims: Claims, claim: Optional[Claim],
             execute, data, log, keep_going: bool) -> bool:
    rid = run.run_id
    main = dist.is_main()
    rlog = RunLog(log, suite_dir / "logs" / f"{rid}.log" if main else None)
    progress.reset()
    try:
        if main:
            claims.clear_failure(rid)
            job = claim.info.get("slurm_job") if claim else None
            rlog.write(f"claimed by {socket.gethostname()} pid {os.getpid()}"
                       + (f" SLURM job {job}" if job else ""))
            _clear_tmp(suite_dir / "checkpoints" / rid)
        log(f"── {run.row.label} (seed {run.seed}, run {rid})")
        rlog.write(f"── {run.row.label} (seed {run.seed}, run {rid})")
        for key, fn in stages_of(run, data):
            stage = claims.wait_claim(key, rlog) if main else None
            try:
                fn(rlog)
            finally:
                if stage is not None:
                    stage.release()
        rec = execute(run, suite, out_dir, data, log=rlog)
        rlog(f"   mAP {100 * rec['metrics']['mAP']:.1f} (chance {100 * rec['chance_mAP']:.1f}) "
             f"in {rec['timing']['wall_s']:.0f}s")
        return True
    except signals.Interrupted as e:
        rlog.write(f"interrupted: {e}")
        raise
    except Exception as e:  # noqa: BLE001  (recorded for `gmbench status`, then re-raised or counted)
        if main:
            rlog.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
            claims.mark_failed(rid, f"{type(e).__name__}: {e}", rlog.path)
        if not keep_going:
            raise
        log(f"   failed: {type(e).__name__}: {e} (log: {rlog.path})")
        return False
    finally:
        if claim is not None:
            claim.release()


def prepare(suite_name: str, runs: Sequence, suite_dir: Path, replace: bool, log=print) -> List:
    """Before any worker starts: refuse (or, with ``replace``, supersede) finished records
    made with other settings, and record the plan (``plan.json``: every planned row and
    seed with its run id, for ``gmbench status`` and the tables' missing-seed marks).
    Returns the runs not finished yet."""
    from ..config import ConfigError, to_dict
    from ..records import config_changes, replace_stale, stale_records
    from ..utils.io import atomic_write_json
    claims = Claims(suite_dir / "claims")
    if not any(claims.holder(k) for k in claims.all_claims()):
        # nobody works here (a run's own folder is also cleared when it is claimed)
        from ..utils.io import remove_stale_tmp
        for p in remove_stale_tmp(suite_dir):
            log(f"removed {p} (left by an interrupted write)")
    done = finished_records(suite_dir / "runs.jsonl")
    stale = stale_records(runs, done)
    if stale and not replace:
        r, rec = stale[0]
        diff = config_changes(rec["config"], to_dict(r.cfg))[:8]
        raise ConfigError(
            f"{suite_dir / 'runs.jsonl'} already holds {len(stale)} finished run(s) of "
            f"this suite made with other settings, e.g. {r.row.label!r} seed {r.seed}:\n  "
            + "\n  ".join(diff or ["(same config, other suite/row identity)"])
            + "\nUse another --out to keep both, or --replace to move the old records "
              "to runs.superseded.jsonl and train these runs anew.")
    if stale:
        replace_stale(suite_dir, stale, log)
    old = read_plan(suite_dir)
    keys = {(r.row.label, r.seed) for r in runs}
    merged = [x for x in old if (x.get("row"), x.get("seed")) not in keys]
    merged += [{"row": r.row.label, "seed": r.seed, "run_id": r.run_id,
                "row_index": r.row_index} for r in runs]
    atomic_write_json(suite_dir / "plan.json", {"suite": suite_name, "runs": merged})
    todo = [r for r in runs if r.run_id not in done]
    log(f"suite {suite_name}: {len(runs) - len(todo)} of {len(runs)} runs already finished")
    return todo


def read_plan(suite_dir: Path) -> List[dict]:
    """plan.json's runs ([] when absent or unreadable: a folder from before plans)."""
    import json
    try:
        runs = json.loads((Path(suite_dir) / "plan.json").read_text(encoding="utf-8"))["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return runs if isinstance(runs, list) else []
