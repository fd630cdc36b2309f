"""A Snakemake job's environment: the package importable in every job, and the GPUs a job claims."""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

SRC = Path(__file__).resolve().parents[2]


def export_src_path() -> None:
    """Prepend src/ to PYTHONPATH so that jobs (conda envs, cluster nodes) import this package.

    Snakemake passes the environment on to local jobs and to sbatch.
    """
    current = os.environ.get("PYTHONPATH", "")
    if str(SRC) not in current.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), current) if p)


# A job of one of these schedulers sees only its allocation's GPUs, numbered from 0 in each
# allocation: GPU locks are kept per allocation.
SCHEDULER_JOB_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID")
GPU_LOCK_DIR = Path(tempfile.gettempdir()) / f"pneumoflow-gpu-locks-{os.getuid()}"
_held_locks: list[int] = []  # open lock files: a GPU stays claimed until this process exits


def listed_gpus() -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else nvidia-smi's list
    (then CUDA_DEVICE_ORDER=PCI_BUS_ID, so that CUDA numbers them as nvidia-smi does)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu.strip() for gpu in visible.split(",") if gpu.strip() not in ("", "-1")]
    try:
        listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


def _try_lock(gpu: str, lock_dir: Path) -> int | None:
    """An open, flock-ed file descriptor for `gpu`, or None when another process holds it."""
    import fcntl  # POSIX only; the Snakefile imports this module on any system

    name = "gpu-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in gpu) + ".lock"
    fd = os.open(lock_dir / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _lock_dir(base: Path) -> Path:
    for name in SCHEDULER_JOB_VARIABLES:
        if name in os.environ:
            return base / f"{name}-{os.environ[name]}"
    return base


def claim_gpus(
    count: int, *, lock_dir: Path = GPU_LOCK_DIR, gpus: list[str] | None = None, poll_s: float = 5.0
) -> str | None:
    """Set CUDA_VISIBLE_DEVICES for a job that claims `count` GPUs (a training job's Snakemake
    resource `gpu`; 0 for other jobs that load a model); call it before torch or TensorFlow is
    imported. Returns the value set, or None where it was left alone.

    - count 0: "" (no GPU), so the job never lands on a GPU that a training job claimed.
    - count n: the first n of the GPUs this process may use (listed_gpus) that no other
      pneumoflow job holds: one lock file per GPU in `lock_dir`, or in a folder of its own per
      Slurm / PBS / LSF allocation. The kernel frees a lock when its process (and any forked
      DataLoader worker) ends, also on kill -9. A job finding too few free GPUs holds none and
      waits.
    """
    if count <= 0:
        if os.environ.get("CUDA_VISIBLE_DEVICES") != "" and listed_gpus():
            log.info("this job claims no GPU (models.<name>.gpus: 0): running on the CPU")
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return ""
    available = listed_gpus() if gpus is None else gpus
    if not available:
        log.warning(
            "this job claims %d GPU(s) but could not list any; CUDA_VISIBLE_DEVICES left as is", count
        )
        return None
    if count > len(available):
        raise ValueError(
            f"this job claims {count} GPUs but this machine has {len(available)} ({','.join(available)}); "
            "lower models.<name>.gpus"
        )
    folder = _lock_dir(lock_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for attempt in itertools.count():
        taken: list[tuple[str, int]] = []
        for gpu in available:
            fd = _try_lock(gpu, folder) if len(taken) < count else None
            if fd is not None:
                taken.append((gpu, fd))
        if len(taken) == count:
            break
        for _, fd in taken:  # all or nothing: a waiting job holds no GPU another job could use
            os.close(fd)
        if attempt == 0:
            log.info("waiting for %d free GPU(s): %s are held by other pneumoflow jobs", count, available)
        time.sleep(poll_s)
    _held_locks.extend(fd for _, fd in taken)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu for gpu, _ in taken)
    log.info("CUDA_VISIBLE_DEVICES=%s (locks in %s)", os.environ["CUDA_VISIBLE_DEVICES"], folder)
    return os.environ["CUDA_VISIBLE_DEVICES"]
