"""Interrupted runs: kill -9 mid-dicom_to_jpg and mid-epoch, and a job's own process killed.

The rerun must complete, keep every finished shard, accept no truncated file and resume
training from the last finished epoch.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import cv2
import pandas as pd
import pytest
import yaml
from conftest import REPO, SNAKEMAKE, TINY, snakemake

pytestmark = pytest.mark.e2e


def config_file(tmp_path: Path, **sections) -> list[str]:
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump(sections))
    return ["--configfile", str(TINY), str(path)]


def start(workdir: Path, *args: str) -> subprocess.Popen:
    """Snakemake in its own process group (so the whole run can be killed at once, as a lost node)."""
    log = open(workdir.parent / f"{workdir.name}.log", "w")  # noqa: SIM115 (closed by the OS at exit)
    cmd = [*SNAKEMAKE, "--directory", str(workdir), "--cores", "1", *args]
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=log, start_new_session=True)


def wait_for(ready, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "snakemake ended before the moment to interrupt it"
        assert time.monotonic() < deadline, "timed out waiting for the moment to interrupt"
        time.sleep(0.05)


def kill_run(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def rerun(workdir: Path, *args: str) -> str:
    """`snakemake --unlock` (a killed run leaves its lock), then the run; returns its output."""
    assert snakemake(workdir, *args, "--unlock").returncode == 0
    result = snakemake(workdir, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def jobs_run(output: str, rule: str) -> int:
    return len(re.findall(rf"^(?:local)?(?:rule|checkpoint) {rule}:$", output, re.M))


def finished_shards(log: Path) -> set[str]:
    """Shards whose dicom_to_jpg job Snakemake reported finished, from the run's output."""
    text = log.read_text()
    shard_of_job = {
        m.group(1): m.group(2)
        for m in re.finditer(
            r"(?:rule|checkpoint) dicom_to_jpg:\n(?:    .*\n)*?    jobid: (\d+)\n"
            r"(?:    .*\n)*?    wildcards: shard=(\d+)",
            text,
        )
    }
    return {shard_of_job[j] for j in re.findall(r"Finished jobid: (\d+) \(Rule: dicom_to_jpg\)", text)}


def test_kill_9_mid_dicom_to_jpg_keeps_finished_shards(tmp_path):
    workdir = tmp_path / "run"
    args = [*config_file(tmp_path, data={"synthetic": {"n_images": 60}}, preprocess={"shards": 6}),
            "--until", "arrays", "qc_rejected"]  # fmt: skip
    proc = start(workdir, *args)
    log, jpg = tmp_path / "run.log", workdir / "results/jpg"
    wait_for(lambda: finished_shards(log), proc)
    kill_run(proc)
    done = finished_shards(log)
    finished = {name: ((jpg / name).stat().st_ino, (jpg / name).stat().st_mtime_ns) for name in done}
    assert 0 < len(finished) < 6

    output = rerun(workdir, *args)
    assert jobs_run(output, "dicom_to_jpg") == 6 - len(finished)  # the finished shards were kept
    for name, identity in finished.items():
        path = jpg / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == identity
    manifest = pd.read_csv(workdir / "results/manifest.tsv", sep="\t")
    assert sorted(p.name for p in jpg.iterdir()) == [f"{i:02d}" for i in range(6)]  # no temp folder left
    jpgs = sorted(jpg.glob("*/*.jpg"))
    assert len(jpgs) == len(manifest)
    assert all(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) is not None for p in jpgs)  # none truncated


def _training_args(tmp_path: Path) -> list[str]:
    # features recomputed every epoch: ~0.1 s an epoch here, where cached ones take ~10 ms and a
    # kill 50 ms after the first checkpoint could land after the last epoch
    vgg16 = {"epochs": 4, "cache_features": False}
    models = {"unet": {"enabled": False}, "resnet101": {"enabled": False}, "vgg16": vgg16}
    return config_file(tmp_path, models=models)


def _resumed_epoch(log: Path) -> int:
    """The 1-based epoch a resumed training started at, from its job log."""
    return int(re.search(r"resuming from \S+ at epoch (\d+) of 4", log.read_text()).group(1))


def _job_pids(session: int, script: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                if script.encode() in cmdline and os.getsid(int(proc.name)) == session:
                    pids.append(int(proc.name))
            except (OSError, ProcessLookupError):
                continue
    return pids


def test_training_killed_mid_epoch_twice_resumes_each_time(tmp_path):
    """First the whole run is killed (-9) mid-epoch, then, on the rerun, the training job's own
    process; each rerun resumes at the epoch that was running."""
    workdir = tmp_path / "run"
    args = _training_args(tmp_path)
    checkpoint = workdir / "results/checkpoints/vgg16/last.pt"
    log = workdir / "logs/train_vgg16.log"

    proc = start(workdir, *args)
    wait_for(checkpoint.exists, proc)
    kill_run(proc)  # during the epoch after the first checkpoint
    assert snakemake(workdir, *args, "--unlock").returncode == 0

    first_checkpoint = checkpoint.stat().st_mtime_ns
    proc = start(workdir, *args)
    wait_for(lambda: checkpoint.exists() and checkpoint.stat().st_mtime_ns > first_checkpoint, proc)
    first_resume = _resumed_epoch(log)
    assert first_resume >= 2  # nothing finished was trained again
    pids = _job_pids(proc.pid, "train_classifier.py")
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=120) != 0  # Snakemake saw the job die
    assert not (workdir / "results/models/vgg16/model.pt").exists()  # nothing that looks finished

    rerun(workdir, *args)
    assert _resumed_epoch(log) > first_resume
    history = pd.read_csv(workdir / "results/models/vgg16/history.csv")
    assert list(history.epoch) == [0, 1, 2, 3]
    assert (workdir / "results/eval/vgg16/metrics.json").exists()
    assert not checkpoint.exists()  # finished: nothing left to resume
