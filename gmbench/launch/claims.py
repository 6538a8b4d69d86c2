"""Per-run claims: who trains which run, without a lock on the whole results folder.

A claim is a file ``SUITE/claims/<key>.json`` created with ``O_CREAT | O_EXCL`` (atomic on
local disks and on NFSv3+/Lustre, unlike ``fcntl`` locks there). It names its holder (host,
pid, SLURM job if any), when it started, and a heartbeat: a thread rewrites the file every
``beat_s`` seconds with the time and the run's progress (:mod:`gmbench.utils.progress`).

A claim whose holder is gone is taken over: a dead pid on this host, a SLURM job that
``squeue`` no longer lists (or this very job, requeued), or no beat for ``lease_s``
seconds. Takeover renames the stale file away (only one renamer can succeed), checks that
what it moved is the stale claim it judged, then creates its own. Keys are run ids, or
``stage-<name>`` for work that rows share (data generation, a detector and its instances).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Optional

from ..utils import progress
from ..utils.io import atomic_write_json

LEASE_S = 120.0
LIVE_SLURM_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED",
                     "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "STAGE_OUT",
                     "SIGNALING"}


def slurm_job_id() -> Optional[str]:
    """This process's SLURM job as squeue names it (``123_4`` for an array task), or None."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def slurm_job_state(job: str) -> Optional[str]:
    """squeue's state of ``job`` (None: not listed, i.e. ended; "?" when squeue is absent
    or fails, so that the lease alone decides)."""
    if not shutil.which("squeue"):
        return "?"
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    if out.returncode != 0:  # squeue exits 1 for a job id it no longer knows
        return None if "Invalid job id" in out.stderr else "?"
    states = out.stdout.split()
    return states[0] if states else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_claim(path: Path) -> Optional[dict]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        info["mtime"] = path.stat().st_mtime
        return info
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # being written (O_EXCL create, then the first write): young files count as live
        try:
            return {"beat": path.stat().st_mtime, "host": "?", "pid": None}
        except OSError:
            return None


def holder_gone(info: dict, lease_s: float, now: Optional[float] = None) -> Optional[str]:
    """Why the claim's holder is gone, or None while it looks alive."""
    now = time.time() if now is None else now
    beat = max(float(info.get("beat") or 0), float(info.get("mtime") or 0))
    if now - beat > lease_s:
        return f"no heartbeat for {now - beat:.0f} s (lease {lease_s:.0f} s)"
    job, mine = info.get("slurm_job"), slurm_job_id()
    if job and job == mine and info.get("pid") != os.getpid():
        return f"SLURM job {job} was requeued"
    if job:
        state = slurm_job_state(job)
        if state is None or (state != "?" and state not in LIVE_SLURM_STATES):
            return f"SLURM job {job} has ended"
    if info.get("host") == socket.gethostname() and info.get("pid") and not _pid_alive(info["pid"]):
        return f"process {info['pid']} on {info['host']} has exited"
    return None


class Claim:
    """A held claim; its heartbeat runs until :meth:`release`."""

    def __init__(self, path: Path, info: dict, beat_s: float):
        self.path, self.info, self.beat_s = path, info, beat_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_loop, daemon=True,
                                        name=f"claim-{path.stem}")
        self._thread.start()

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.beat_s):
            self.beat()

    def beat(self) -> None:
        cur = read_claim(self.path)
        if cur is None or cur.get("token") != self.info["token"]:
            self.lost = True  # taken over as stale: the records' run-id check prevents a duplicate
            self._stop.set()
            return
        self.info.update(beat=time.time(), progress=progress.snapshot())
        try:
            atomic_write_json(self.path, self.info)
        except OSError:
            pass  # a missed beat is retried; the lease is many beats long

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        cur = read_claim(self.path)
        if cur is not None and cur.get("token") == self.info["token"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Claims:
    """The claims folder of one suite."""

    def __init__(self, folder: Path, lease_s: float = LEASE_S, beat_s: Optional[float] = None):
        self.folder = Path(folder)
        self.lease_s = float(lease_s)
        self.beat_s = beat_s or max(0.5, min(5.0, self.lease_s / 6))

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def holder(self, key: str) -> Optional[dict]:
        """The live holder's claim, or None if the key is free or its holder is gone."""
        info = read_claim(self.path(key))
        if info is None or holder_gone(info, self.lease_s):
            return None
        return info

    def try_claim(self, key: str, log: Callable[[str], None] = print, **fields) -> Optional[Claim]:
        """Claim ``key`` (taking over a stale claim), or None if a live holder has it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        for _ in range(3):
            info = {"key": key, "token": uuid.uuid4().hex, "host": socket.gethostname(),
                    "pid": os.getpid(), "slurm_job": slurm_job_id(), "started": time.time(),
                    "beat": time.time(), "progress": {}, **fields}
            try:
                fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._take_over(path, log):
                    return None
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(info, f)
                f.flush()
                os.fsync(f.fileno())
            return Claim(path, info, self.beat_s)
        return None

    def _take_over(self, path: Path, log) -> bool:
        """Move a stale claim aside; False when its holder is alive (or someone else won)."""
        old = read_claim(path)
        if old is None:
            return True  # released meanwhile: try to create again
        why = holder_gone(old, self.lease_s)
        if why is None:
            return False
        aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return True
        moved = read_claim(aside) or {}
        if moved.get("token") != old.get("token"):  # a fresh claim slipped in: put it back
            try:
                os.link(aside, path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        log(f"taking over {path.name}: {why} (held by {old.get('host')} pid {old.get('pid')}"
            + (f", SLURM job {old['slurm_job']}" if old.get("slurm_job") else "") + ")")
        return True

    def wait_claim(self, key: str, log: Callable[[str], None] = print,
                   max_sleep: float = 10.0, **fields) -> Claim:
        """Claim ``key``, polling with backoff while a live holder has it."""
        sleep, told = 0.2, False
        while True:
            c = self.try_claim(key, log, **fields)
            if c is not None:
                return c
            if not told:
                h = read_claim(self.path(key)) or {}
                log(f"waiting for {key} (held by {h.get('host')} pid {h.get('pid')})")
                told = True
            from ..utils import signals
            signals.check(f"waiting for {key}")
            time.sleep(sleep)
            sleep = min(max_sleep, sleep * 1.5)

    # failure markers: a run that raised, for `gmbench status` (removed when it is claimed again)
    def mark_failed(self, key: str, error: str, log_path: Optional[Path]) -> None:
        atomic_write_json(self.folder / f"{key}.failed.json",
                          {"key": key, "error": error, "host": socket.gethostname(),
                           "pid": os.getpid(), "slurm_job": slurm_job_id(), "time": time.time(),
                           "log": str(log_path) if log_path else None})

    def failure(self, key: str) -> Optional[dict]:
        p = self.folder / f"{key}.failed.json"
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def clear_failure(self, key: str) -> None:
        (self.folder / f"{key}.failed.json").unlink(missing_ok=True)

    def all_claims(self) -> Dict[str, dict]:
        out = {}
        if self.folder.is_dir():
            for p in self.folder.glob("*.json"):
                if not p.name.endswith((".failed.json", ".job.json")):
                    info = read_claim(p)
                    if info is not None:
                        out[p.stem] = info
        return out
