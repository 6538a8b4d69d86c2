"""``gmbench run --workers N``: N processes on this machine drain one suite's queue.

Each worker is a child ``python -m gmbench run`` with the same suite, rows and settings
(plus ``--worker-of N``); the claims (:mod:`.claims`) hand each run to one of them. On GPUs
worker i sees its own ``--gpus-per-run`` devices through ``CUDA_VISIBLE_DEVICES``; with
G > 1 the worker is a torchrun group of G processes (the engine's DDP path). On CPU the
cores are split: ``OMP_NUM_THREADS`` = cores // N, which is torch's default thread count
in the child and so leaves ``train.num_threads`` (and with it the run ids) untouched; a
value set there wins. Ctrl-C reaches every worker (one process group); SIGTERM to the
parent is passed on. Each worker checkpoints and exits; re-running resumes every run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import ConfigError
from ..utils.io import safe_name
from .queue import prepare


def visible_gpus() -> List[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [x for x in env.split(",") if x.strip()]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def worker_envs(n: int, gpus_per_run: int, cuda: bool, cores: Optional[int] = None) -> List[dict]:
    """The environment changes of each of ``n`` workers (pure, for the tests)."""
    if n < 1 or gpus_per_run < 1:
        raise ConfigError(f"--workers {n} --gpus-per-run {gpus_per_run}: both must be at least 1")
    cores = cores or len(os.sched_getaffinity(0))
    threads = str(max(1, cores // (n * (1 if cuda else gpus_per_run))))
    envs = []
    if cuda:
        gpus = visible_gpus()
        if n * gpus_per_run > len(gpus):
            raise ConfigError(f"--workers {n} × --gpus-per-run {gpus_per_run} needs "
                              f"{n * gpus_per_run} GPUs; {len(gpus)} visible "
                              f"({', '.join(gpus) or 'none'}); lower --workers")
        for i in range(n):
            envs.append({"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * gpus_per_run:(i + 1) * gpus_per_run]),
                         "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    else:
        envs = [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(n)]
    return envs


def worker_command(child_args: Sequence[str], gpus_per_run: int) -> List[str]:
    if gpus_per_run > 1:  # one torchrun group per worker; --standalone picks a free port
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={gpus_per_run}", "-m", "gmbench", *child_args]
    return [sys.executable, "-m", "gmbench", *child_args]


def run_workers(suite, runs: Sequence, out_dir: Path, child_args: Sequence[str], n: int,
                gpus_per_run: int = 1, cuda: bool = False, replace: bool = False,
                log=print) -> int:
    """Prepare the folder once, start ``n`` workers, wait for all; returns the exit code
    (the first non-zero child's, or 128 + signum after a signal)."""
    envs = worker_envs(n, gpus_per_run, cuda)
    suite_dir = Path(out_dir) / safe_name(suite.name, "suite name")
    prepare(suite.name, runs, suite_dir, replace, log)
    since = time.time()
    args = [*child_args, "--worker-of", str(n), "--since", repr(since)]
    procs = []
    got: List[int] = []

    def forward(signum, frame):
        got.append(signum)
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM if signum != signal.SIGINT else signal.SIGINT)
                except OSError:
                    pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for i, extra in enumerate(envs):
            env = dict(os.environ, **extra, GMBENCH_WORKER=str(i))
            procs.append(subprocess.Popen(worker_command(args, gpus_per_run), env=env))
            log(f"worker {i}: pid {procs[-1].pid}" + (f", GPUs {extra['CUDA_VISIBLE_DEVICES']}"
                                                      if cuda else f", {extra['OMP_NUM_THREADS']} thread(s)"))
        codes = [p.wait() for p in procs]
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if got:
        return 128 + got[0]
    bad = [c for c in codes if c != 0]
    if bad:
        log(f"{len(bad)} of {n} workers exited non-zero ({', '.join(map(str, codes))}); "
            f"see `gmbench status {suite_dir}`")
    return (bad[0] if bad[0] > 0 else 128 - bad[0]) if bad else 0
