"""A real one-node Slurm for the cluster tests: munged, slurmctld and slurmd on this host.

Everything lives in one folder of the test (config, state, spool, logs, munge socket)
and on free loopback ports, so it never touches another Slurm or munge on the host.
The daemons run in the foreground as children of the test and are stopped by pid.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
MUNGE_KEY = Path("/etc/munge/munge.key")
# snakemake-executor-plugin-slurm-jobstep 0.6 drops SLURM_CONF before its inner srun,
# so jobs find the config only at Slurm's default path, as on a real cluster.
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")


def unavailable_reason() -> str | None:
    """Why this machine cannot run a local Slurm, or None when it can."""
    missing = [name for name in (*DAEMONS, "sbatch", "squeue") if shutil.which(name) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge; .ci/run does it)"
    if os.geteuid() != 0:
        return "slurmd needs root to start jobs as the submitting user"
    if not MUNGE_KEY.is_file():
        return f"{MUNGE_KEY} is missing (made by the munge package)"
    if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
        return f"{DEFAULT_CONF} exists: this host has its own Slurm, which the test leaves alone"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(root: Path, host: str, cpus: int, mem_mb: int) -> str:
    return f"""\
ClusterName=pneumoflowtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
ReturnToService=2
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    """Start with `start()`, stop with `stop()`; `env` is what clients (sbatch, squeue) need."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: list[subprocess.Popen] = []
        self.linked_default = False
        self.mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20) - 2048

    def start(self, timeout: float = 60) -> None:
        for sub in ("munge", "state", "spool", "log", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(_slurm_conf(self.root, host, os.cpu_count() or 1, self.mem_mb))
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.symlink_to(self.conf)
        self.linked_default = True
        munge = self.root / "munge"
        self._spawn(
            "munged", "--foreground", "--force", f"--socket={munge}/munge.socket",
            f"--key-file={MUNGE_KEY}", f"--pid-file={munge}/munged.pid",
            f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed",
        )  # fmt: skip
        self._wait(lambda: (munge / "munge.socket").exists(), timeout, "munged socket")
        self._spawn("slurmctld", "-D", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-f", str(self.conf))
        self._wait(self._node_idle, timeout, "the node to come up idle in sinfo")

    def _spawn(self, *cmd: str) -> None:
        log = open(self.root / "log" / f"{cmd[0]}.out", "ab")  # noqa: SIM115 (closed with the process)
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log))

    def _node_idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True).stdout
        return out.strip() == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                logs = "\n".join(f.read_text()[-1500:] for f in (self.root / "log").glob("*"))
                raise RuntimeError(f"local Slurm: waited for {what}; exited: {dead}\n{logs}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Terminate the daemons this object started, newest first, by pid."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        if self.linked_default and DEFAULT_CONF.is_symlink():
            DEFAULT_CONF.unlink()
            self.linked_default = False

    def job_ids(self) -> set[str]:
        """Ids of the jobs this cluster still remembers (finished ones stay for MinJobAge)."""
        out = subprocess.run(
            ["squeue", "-h", "-t", "all", "-o", "%i"], env=self.env, capture_output=True, text=True
        ).stdout
        return set(out.split())
