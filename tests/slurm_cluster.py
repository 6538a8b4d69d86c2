"""A one-node SLURM cluster on localhost for the ``--launcher slurm`` tests.

``start_cluster(folder)`` writes a slurm.conf (2 CPUs, proctrack/linuxproc, task/none,
cons_tres, every state and spool folder under ``folder``), starts ``munged`` as the munge
user on a private socket, then ``slurmctld`` and ``slurmd`` in the foreground (so that
they are this process's children, ended by pid), and waits until ``sinfo`` shows the node
idle. Needs root and Debian's slurm-wlm + munge (``.ci/run`` installs them). Without them
it raises :class:`Unavailable` with the reason; the fixture then skips, except under
``CI=true``, where it fails.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class Unavailable(RuntimeError):
    """SLURM cannot start here (the reason is the message)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONF = """ClusterName=gmbtest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
KillWait=10
MinJobAge=60
InactiveLimit=0
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.procs = []
        self.munge_dir = None
        self.env = {}

    def start(self, timeout: float = 60.0) -> "Cluster":
        if os.geteuid() != 0:
            raise Unavailable("not root: slurmd and munged need root to start")
        missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue")
                   if not shutil.which(b) and not Path(f"/usr/sbin/{b}").exists()]
        if missing:
            raise Unavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
        try:
            munge = pwd.getpwnam("munge")
        except KeyError:
            raise Unavailable("no munge user (apt-get install munge)") from None
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            raise Unavailable(f"{key} missing (apt-get install munge creates it)")
        d = self.folder
        for sub in ("state", "spool"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        # munged refuses folders others can reach: a private one in /tmp, owned by munge
        self.munge_dir = Path(tempfile.mkdtemp(prefix="gmbench-munge-"))
        os.chown(self.munge_dir, munge.pw_uid, munge.pw_gid)
        sock = self.munge_dir / "munge.socket"
        host = socket.gethostname().split(".")[0]
        conf = d / "slurm.conf"
        conf.write_text(CONF.format(host=host, d=d, socket=sock, ctld_port=_free_port(),
                                    slurmd_port=_free_port()))
        self.env = {"SLURM_CONF": str(conf)}
        env = dict(os.environ, **self.env)
        munged = shutil.which("munged") or "/usr/sbin/munged"
        res = subprocess.run(["runuser", "-u", "munge", "--", munged, f"--socket={sock}",
                              f"--pid-file={self.munge_dir}/munged.pid",
                              f"--log-file={self.munge_dir}/munged.log",
                              f"--seed-file={self.munge_dir}/munged.seed", "--force"],
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise Unavailable(f"munged did not start: {res.stderr.strip()[-500:]}")
        for daemon in ("slurmctld", "slurmd"):
            exe = shutil.which(daemon) or f"/usr/sbin/{daemon}"
            args = [exe, "-D", "-f", str(conf)] + (["-c", "-i"] if daemon == "slurmctld" else [])
            self.procs.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                               stderr=open(d / f"{daemon}.stderr", "w")))
            time.sleep(0.5)
        t0 = time.time()
        while time.time() - t0 < timeout:
            for p in self.procs:
                if p.poll() is not None:
                    raise Unavailable(f"{p.args[0]} exited ({p.returncode}): {self.logs()}")
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True,
                                 text=True, timeout=30).stdout.split()
            if out and all(s.startswith("idle") for s in out):
                return self
            time.sleep(0.5)
        raise Unavailable(f"node not idle after {timeout:.0f} s: {self.logs()}")

    def logs(self) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.stderr", "slurmd.stderr"):
            p = self.folder / name
            if p.exists():
                out.append(f"{name}: " + " | ".join(p.read_text(errors="replace").splitlines()[-5:]))
        return "\n".join(out)

    def stop(self) -> None:
        env = dict(os.environ, **self.env)
        if self.env:
            subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True,
                           timeout=30)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self.munge_dir is not None:
            pid = self.munge_dir / "munged.pid"
            try:
                os.kill(int(pid.read_text().strip()), 15)
            except (OSError, ValueError):
                pass
            shutil.rmtree(self.munge_dir, ignore_errors=True)
