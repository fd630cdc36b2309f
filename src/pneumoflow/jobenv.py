"""A Snakemake job's environment: the package importable in every job, and the GPUs a job claims."""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

SRC = Path(__file__).resolve().parents[1]


def export_src_path() -> None:
    """Prepend src/ to PYTHONPATH so that jobs (conda envs, cluster nodes) import this package.

    Snakemake passes the environment on to local jobs and to sbatch.
    """
    current = os.environ.get("PYTHONPATH", "")
    if str(SRC) not in current.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), current) if p)


# A job started by one of these schedulers already sees only the GPUs it was given.
SCHEDULER_JOB_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")
GPU_LOCK_DIR = Path(tempfile.gettempdir()) / "pneumoflow-gpu-locks"
_held_locks: list = []  # open lock files: a GPU stays claimed until this process exits


def listed_gpus() -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else nvidia-smi's list."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu for gpu in visible.split(",") if gpu.strip() not in ("", "-1")]
    try:
        listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


def _try_lock(gpu: str, lock_dir: Path) -> bool:
    lock = open(lock_dir / f"gpu-{gpu}.lock", "w")  # noqa: SIM115 (held open on purpose)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return False
    _held_locks.append(lock)
    return True


def claim_gpus(
    count: int, *, lock_dir: Path = GPU_LOCK_DIR, gpus: list[str] | None = None, poll_s: float = 5.0
) -> str:
    """Set CUDA_VISIBLE_DEVICES for a training job that claims `count` GPUs (its Snakemake
    resource `gpu`); call it before torch or TensorFlow is imported. Returns the value set.

    - count 0: no GPU ("" hides them all), so a job that claimed none never lands on a GPU
      that another job claimed.
    - Under a scheduler (Slurm, PBS, LSF, SGE), the job's own CUDA_VISIBLE_DEVICES is kept.
    - Locally, the job takes the first `count` GPUs that no other pneumoflow job on this machine
      holds (one lock file per GPU in `lock_dir`; the kernel frees a lock when its process
      ends, also on kill -9), waiting while all are taken.
    """
    if count <= 0:
        if listed_gpus():
            log.info("this job claims no GPU (models.<name>.gpus: 0): training on the CPU")
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return ""
    if any(name in os.environ for name in SCHEDULER_JOB_VARIABLES):
        return os.environ.get("CUDA_VISIBLE_DEVICES", "")
    available = listed_gpus() if gpus is None else gpus
    if not available:
        log.warning("this job claims %d GPU(s), but none is visible: training on the CPU", count)
        return os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if count > len(available):
        raise ValueError(
            f"this job claims {count} GPUs but this machine has {len(available)} ({','.join(available)}); "
            "lower models.<name>.gpus"
        )
    lock_dir.mkdir(parents=True, exist_ok=True)
    taken: list[str] = []
    for attempt in itertools.count():
        for gpu in available:
            if len(taken) < count and gpu not in taken and _try_lock(gpu, lock_dir):
                taken.append(gpu)
        if len(taken) == count:
            break
        if attempt == 0:
            log.info("waiting for a free GPU: %s are held by other pneumoflow jobs", available)
        time.sleep(poll_s)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(taken)
    log.info("CUDA_VISIBLE_DEVICES=%s (claimed in %s)", os.environ["CUDA_VISIBLE_DEVICES"], lock_dir)
    return os.environ["CUDA_VISIBLE_DEVICES"]
