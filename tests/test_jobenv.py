"""Which GPUs a training job sees: CUDA_VISIBLE_DEVICES from the job's `gpu` resource."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pneumoflow import jobenv

REPO = Path(__file__).resolve().parents[1]
HOLD_GPU = """
import sys, time
from pathlib import Path
from pneumoflow.jobenv import claim_gpus
print(claim_gpus(1, lock_dir=Path(sys.argv[1]), gpus=["0", "1"]), flush=True)
time.sleep(600)
"""


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("CUDA_VISIBLE_DEVICES", *jobenv.SCHEDULER_JOB_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    yield
    for lock in jobenv._held_locks:
        lock.close()
    jobenv._held_locks.clear()


def test_a_job_that_claims_no_gpu_sees_none(clean_env, tmp_path):
    assert jobenv.claim_gpus(0, lock_dir=tmp_path, gpus=["0"]) == ""
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_jobs_on_one_machine_get_different_gpus(clean_env, tmp_path):
    assert jobenv.claim_gpus(1, lock_dir=tmp_path, gpus=["0", "1"]) == "0"
    assert jobenv.claim_gpus(1, lock_dir=tmp_path, gpus=["0", "1"]) == "1"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_a_killed_job_frees_its_gpu(clean_env, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_GPU, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "0"
        assert jobenv.claim_gpus(1, lock_dir=tmp_path, gpus=["0", "1"]) == "1"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    started = time.monotonic()
    assert jobenv.claim_gpus(1, lock_dir=tmp_path, gpus=["0", "1"], poll_s=0.1) == "0"
    assert time.monotonic() - started < 5


def test_a_job_waits_while_every_gpu_is_held(clean_env, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_GPU.replace('"0", "1"', '"0"'), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert holder.stdout.readline().strip() == "0"
    waiter = subprocess.Popen(
        [sys.executable, "-c", HOLD_GPU.replace('"0", "1"', '"0"'), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        time.sleep(2)
        assert waiter.poll() is None  # still waiting, and has printed nothing
        holder.kill()
        holder.wait()
        assert waiter.stdout.readline().strip() == "0"
    finally:
        for process in (holder, waiter):
            process.kill()
            process.wait()


def test_a_scheduler_job_keeps_its_own_gpus(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert jobenv.claim_gpus(1, lock_dir=tmp_path, gpus=["0", "1"]) == "3"
    assert not list(tmp_path.iterdir())  # no lock taken


def test_claiming_more_gpus_than_the_machine_has_says_what_to_change(clean_env, tmp_path):
    with pytest.raises(ValueError, match=r"claims 2 GPUs but this machine has 1 .*models.<name>.gpus"):
        jobenv.claim_gpus(2, lock_dir=tmp_path, gpus=["0"])


def test_visible_devices_limit_the_gpus_a_job_chooses_from(clean_env, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert jobenv.listed_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert jobenv.listed_gpus() == []


@pytest.mark.parametrize("script", ["train_classifier.py", "train_unet.py"])
def test_training_scripts_claim_gpus_before_torch_or_tensorflow_starts(script):
    """CUDA_VISIBLE_DEVICES is read once, when CUDA starts: the claim must come before the
    training module (which imports torch / TensorFlow) is imported."""
    body = ast.parse((REPO / "scripts" / script).read_text()).body
    claim = next(
        i
        for i, node in enumerate(body)
        if isinstance(node, ast.Expr) and getattr(node.value.func, "id", "") == "claim_gpus"
    )
    assert "snakemake.resources.gpu" in ast.unparse(body[claim])
    training = next(
        i
        for i, node in enumerate(body)
        if isinstance(node, ast.ImportFrom)
        and node.module in ("pneumoflow.train_classifier", "pneumoflow.train_unet")
    )
    assert claim < training
