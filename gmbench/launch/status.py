"""``gmbench status results/SUITE``: where each planned run stands.

States: finished (its record's mAP), running (a live claim: host, pid or SLURM job,
epoch and step, seconds since the last heartbeat), failed (a failure marker: the error
and the last lines of the run's log), stopped (a claim whose holder is gone: re-run to
resume it), queued (a live SLURM task that has not claimed it yet), waiting.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Tuple

from ..records import finished_records
from .claims import Claims, holder_gone, read_claim
from .queue import read_plan

STATES = ("finished", "running", "queued", "waiting", "stopped", "failed")


def _tail(path, n: int = 5) -> List[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except (OSError, TypeError):
        return []
    return [x for x in lines if x.strip()][-n:]


def _progress(info: dict) -> str:
    p = info.get("progress") or {}
    if "epoch" not in p:
        return "preparing"
    spe = p.get("steps_per_epoch")
    return (f"epoch {p['epoch'] + 1}/{p.get('epochs', '?')} step {p.get('step', 0)}"
            + (f"/{spe}" if spe else ""))


def _resume_point(suite_dir: Path, rid: str) -> str:
    import re
    d = suite_dir / "checkpoints" / rid
    found = sorted(re.findall(r"ckpt-e(\d+)-s(\d+)\.pt$", p.name)[0]
                   for p in d.glob("ckpt-e*-s*.pt")) if d.is_dir() else []
    if not found:
        return ""
    e, s = found[-1]
    return f"resumes from its checkpoint at epoch {int(e) + 1} step {int(s)}"


def run_states(suite_dir: Path, lease_s: float = 120.0) -> List[Tuple[str, dict, str]]:
    """(state, plan entry, detail) for every planned run (or every recorded/claimed one
    when the folder has no plan.json)."""
    from .slurm import live_job
    suite_dir = Path(suite_dir)
    done = finished_records(suite_dir / "runs.jsonl")
    claims = Claims(suite_dir / "claims", lease_s)
    plan = read_plan(suite_dir)
    known = {p["run_id"] for p in plan}
    plan += [{"row": r["row"], "seed": r["seed"], "run_id": i} for i, r in done.items() if i not in known]
    now, out = time.time(), []
    for p in plan:
        rid = p["run_id"]
        if rid in done:
            m = done[rid]["metrics"].get("mAP")
            out.append(("finished", p, "mAP " + ("?" if m is None else f"{100 * m:.1f}")))
            continue
        info = read_claim(claims.path(rid))
        gone = holder_gone(info, lease_s, now) if info else None
        fail = claims.failure(rid)
        if info and not gone:
            who = f"{info.get('host')} pid {info.get('pid')}"
            if info.get("slurm_job"):
                who += f" SLURM job {info['slurm_job']}"
            beat = now - max(float(info.get("beat") or 0), float(info.get("mtime") or 0))
            out.append(("running", p, f"{who}, {_progress(info)}, last beat {beat:.0f} s ago"))
        elif fail:
            tail = _tail(fail.get("log"))
            out.append(("failed", p, fail.get("error", "?") + "".join("\n      | " + x for x in tail)))
        elif info:
            out.append(("stopped", p, f"{gone}; re-run the command to resume it"))
        else:
            job = live_job(suite_dir, rid)
            out.append(("queued", p, f"SLURM job {job}") if job else ("waiting", p, _resume_point(suite_dir, rid)))
    return out


def status_report(suite_dir: Path, lease_s: float = 120.0) -> Tuple[str, int]:
    """The text and the exit code (0 only when every run is finished)."""
    states = run_states(suite_dir, lease_s)
    if not states:
        return f"{suite_dir}: no planned or recorded runs (run the suite first)", 1
    width = max(len(f"{p['row']} seed {p['seed']}") for _, p, _ in states)
    lines = [f"{s:9s} {(p['row'] + ' seed ' + str(p['seed'])).ljust(width)}  {d}".rstrip()
             for s, p, d in states]
    counts = {s: sum(1 for x, _, _ in states if x == s) for s in STATES}
    lines.append(f"{len(states)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(lines), 0 if counts["finished"] == len(states) else 1
