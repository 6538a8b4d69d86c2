"""``gmbench run --launcher slurm``: the suite's unfinished runs as one submitit job array.

One array task per run. A task claims its run like any worker (:mod:`.claims`), so a
second launch, a requeued task or a ``--workers`` run on the same folder never trains a
run twice. Preemption or the time limit: SLURM signals the task (USR2, 90 s ahead);
submitit calls :meth:`SlurmRun.checkpoint`, which resubmits the same task, and the run
resumes from its last checkpoint (``train.ckpt_every_steps`` bounds the work lost).
``scancel`` sends SIGTERM: the engine checkpoints at the next step and the task ends;
re-issuing the command submits it again. A run with G > 1 GPUs runs G SLURM tasks that
form one torch.distributed group (submitit's TorchDistributedEnvironment).

Re-issuing the command submits only runs that are neither finished, nor claimed by a live
holder, nor pending/running in SLURM (``SUITE/claims/<run_id>.job.json`` names the task).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ..errors import ConfigError
from ..records import finished_records
from ..utils.download import OFFLINE_ENV
from ..utils.io import atomic_write_json, safe_name
from .claims import LIVE_SLURM_STATES, Claims, slurm_job_state


@dataclass
class SlurmOptions:
    partition: Optional[str] = None
    time_min: int = 60 * 24
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem_gb: Optional[float] = None
    account: Optional[str] = None
    constraint: Optional[str] = None
    max_parallel: Optional[int] = None
    lease_s: float = 120.0

    def check(self) -> "SlurmOptions":
        for k in ("time_min", "cpus_per_run"):
            if getattr(self, k) < 1:
                raise ConfigError(f"SLURM option {k}={getattr(self, k)}: must be at least 1")
        if self.gpus_per_run < 0 or (self.max_parallel is not None and self.max_parallel < 1):
            raise ConfigError("SLURM options: --gpus-per-run must be >= 0 and --max-parallel >= 1")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise ConfigError(f"SLURM option --mem-gb={self.mem_gb}: must be positive")
        return self


def parse_time(text: str) -> int:
    """Minutes from ``90``, ``1:30:00``, ``2-00:00:00`` (SLURM's forms)."""
    t = str(text).strip()
    try:
        days = 0
        if "-" in t:
            d, t = t.split("-", 1)
            days = int(d)
        parts = [int(x) for x in t.split(":")]
    except ValueError:
        raise ConfigError(f"--time-limit {text!r}: give minutes (90), H:MM:SS or D-HH:MM:SS") from None
    if len(parts) == 1:
        minutes = parts[0]
    elif len(parts) == 2:
        minutes = parts[0] * 60 + parts[1]
    else:
        minutes = parts[0] * 60 + parts[1] + (1 if parts[2] else 0)
    return days * 24 * 60 + minutes


class SlurmRun:
    """One array task: train one planned run (picklable; submitit ships it to the node)."""

    def __init__(self, run_suite: Callable, suite, runs: Sequence, run_id: str, out_dir: Path,
                 formats, lease_s: float, gpus: int, since: float):
        # run_suite (gmbench.runner's) is handed in: this module sits below the runner
        self.run_suite = run_suite
        self.suite, self.runs, self.run_id = suite, list(runs), run_id
        self.out_dir, self.formats, self.lease_s = Path(out_dir), list(formats), lease_s
        self.gpus, self.since = gpus, since
        # as the submitting shell decided (the CLI sets 1 unless GMBENCH_OFFLINE was given)
        self.offline = os.environ.get(OFFLINE_ENV, "1")

    def __call__(self) -> Optional[float]:
        from ..utils import dist
        from ..utils.env import resolve_device
        os.environ[OFFLINE_ENV] = self.offline  # torch hub and the runner read it in the job
        if self.gpus > 1:
            import submitit
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:  # train.num_threads (if set) still wins; this is torch's default
            os.environ.setdefault("OMP_NUM_THREADS", cpus)
            import torch
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        run = next(r for r in self.runs if r.run_id == self.run_id)
        dist.init_from_env(str(resolve_device(run.cfg.device)))
        try:
            suite_dir = self.run_suite(self.suite, [run], self.out_dir, self.formats,
                                  lease_s=self.lease_s, keep_going=True, since=self.since,
                                  prepared=True)
        finally:
            dist.shutdown()
        rec = finished_records(suite_dir / "runs.jsonl").get(self.run_id)
        return rec["metrics"]["mAP"] if rec else None

    def checkpoint(self):
        """Preemption / time limit: resubmit this very task (it resumes from its checkpoint)."""
        import submitit
        return submitit.helpers.DelayedSubmission(self)


def _job_marker(suite_dir: Path, run_id: str) -> Path:
    return suite_dir / "claims" / f"{run_id}.job.json"


def live_job(suite_dir: Path, run_id: str) -> Optional[str]:
    """The SLURM task submitted for ``run_id`` if squeue still lists it as live."""
    try:
        job = json.loads(_job_marker(suite_dir, run_id).read_text())["job"]
    except (OSError, ValueError, KeyError):
        return None
    state = slurm_job_state(job)
    return job if state in LIVE_SLURM_STATES else None


def submit(run_suite: Callable, suite, runs: Sequence, out_dir: Path, opts: SlurmOptions,
           formats=("csv", "md"), log=print) -> List[str]:
    """Submit every run that is not finished, not held and not queued, each task calling
    ``run_suite`` (gmbench.runner's) on its run; returns the job ids."""
    import submitit
    from .queue import prepare
    opts.check()
    suite_dir = Path(out_dir) / safe_name(suite.name, "suite name")
    todo = prepare(suite.name, runs, suite_dir, replace=False, log=log)
    claims = Claims(suite_dir / "claims", opts.lease_s)
    send, skipped = [], []
    for r in todo:
        holder = claims.holder(r.run_id)
        job = live_job(suite_dir, r.run_id)
        if holder or job:
            who = job or f"{holder.get('host')} pid {holder.get('pid')}"
            skipped.append(f"{r.row.label!r} seed {r.seed} ({who})")
        else:
            send.append(r)
    for s in skipped:
        log(f"not submitted, held or queued: {s}")
    if not send:
        log("nothing to submit")
        return []
    g = opts.gpus_per_run
    ex = submitit.SlurmExecutor(folder=str(suite_dir / "slurm" / "%j"), max_num_timeout=100)
    params = dict(job_name=f"gmbench-{suite.name}", time=opts.time_min, nodes=1,
                  ntasks_per_node=max(1, g), cpus_per_task=opts.cpus_per_run,
                  array_parallelism=opts.max_parallel or len(send))
    if g:
        params["gpus_per_node"] = g
    for key, val in (("partition", opts.partition), ("account", opts.account),
                     ("constraint", opts.constraint)):
        if val:
            params[key] = val
    if opts.mem_gb:
        params["mem"] = f"{int(opts.mem_gb * 1024)}M"
    ex.update_parameters(**params)
    since = time.time()
    with ex.batch():
        jobs = [ex.submit(SlurmRun(run_suite, suite, runs, r.run_id, out_dir, formats,
                                   opts.lease_s, g, since))
                for r in send]
    for r, j in zip(send, jobs):
        atomic_write_json(_job_marker(suite_dir, r.run_id),
                          {"job": j.job_id, "row": r.row.label, "seed": r.seed,
                           "submitted": since, "options": asdict(opts)})
        log(f"submitted {r.row.label!r} seed {r.seed} as SLURM job {j.job_id}")
    log(f"{len(jobs)} run(s) in one array; follow them with `gmbench status {suite_dir}`")
    return [j.job_id for j in jobs]


def wait_jobs(suite_dir: Path, runs: Sequence, poll_s: float = 2.0) -> None:
    """Until no run of ``runs`` has a live SLURM task or a live claim."""
    from ..utils import signals
    claims = Claims(suite_dir / "claims")
    while True:
        busy = [r for r in runs if live_job(suite_dir, r.run_id) or claims.holder(r.run_id)]
        if not busy:
            return
        signals.check("waiting for the SLURM jobs (they keep running)")
        time.sleep(poll_s)
