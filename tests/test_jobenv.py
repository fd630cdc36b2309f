"""Which GPUs a training job sees: CUDA_VISIBLE_DEVICES from the job's `gpu` resource."""

from __future__ import annotations

import ast
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pneumoflow.core import jobenv

REPO = Path(__file__).resolve().parents[1]
HOLD_GPUS = """
import sys, time
from pathlib import Path
from pneumoflow.core.jobenv import claim_gpus
count, gpus = int(sys.argv[2]), sys.argv[3].split(",")
print(claim_gpus(count, lock_dir=Path(sys.argv[1]), gpus=gpus, poll_s=0.1), flush=True)
time.sleep(600)
"""
VARIABLES = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", *jobenv.SCHEDULER_JOB_VARIABLES)


@pytest.fixture
def clean_env():
    saved = {name: os.environ.pop(name) for name in VARIABLES if name in os.environ}
    yield
    for fd in jobenv._held_locks:
        os.close(fd)
    jobenv._held_locks.clear()
    for name in VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(saved)


def start_holder(lock_dir: Path, count: int, gpus: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", HOLD_GPUS, str(lock_dir), str(count), gpus],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def printed_within(process: subprocess.Popen, seconds: float) -> str | None:
    """The process's next output line, or None if it prints nothing within `seconds`."""
    ready, _, _ = select.select([process.stdout], [], [], seconds)
    return process.stdout.readline().strip() if ready else None


def test_a_job_that_claims_no_gpu_sees_none(clean_env, tmp_path):
    assert jobenv.claim_gpus(0, lock_dir=tmp_path, gpus=["0"]) == ""
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_jobs_on_one_machine_get_different_gpus(clean_env, tmp_path):
    assert jobenv.claim_gpus(1, lock_dir=tmp_path, gpus=["0", "1"]) == "0"
    assert jobenv.claim_gpus(1, lock_dir=tmp_path, gpus=["0", "1"]) == "1"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_a_killed_job_frees_its_gpu(clean_env, tmp_path):
    holder = start_holder(tmp_path, 1, "0,1")
    try:
        assert printed_within(holder, 60) == "0"
        assert jobenv.claim_gpus(1, lock_dir=tmp_path, gpus=["0", "1"]) == "1"
    finally:
        holder.kill()
        holder.wait()
    started = time.monotonic()
    assert jobenv.claim_gpus(1, lock_dir=tmp_path, gpus=["0", "1"], poll_s=0.1) == "0"
    assert time.monotonic() - started < 5


def test_a_job_waits_while_its_gpus_are_held_and_holds_none_meanwhile(clean_env, tmp_path):
    one = start_holder(tmp_path, 1, "0,1")
    both = None
    try:
        assert printed_within(one, 60) == "0"
        both = start_holder(tmp_path, 2, "0,1")
        assert printed_within(both, 5) is None  # waiting for GPU 0
        # while it waits it holds nothing: GPU 1 is still free
        assert jobenv.claim_gpus(1, lock_dir=tmp_path, gpus=["1"], poll_s=0.1) == "1"
        for fd in jobenv._held_locks:
            os.close(fd)
        jobenv._held_locks.clear()
        one.kill()
        one.wait()
        assert printed_within(both, 30) == "0,1"
    finally:
        for process in (one, both):
            if process is not None:
                process.kill()
                process.wait()


def test_jobs_in_one_slurm_allocation_get_different_gpus(clean_env, tmp_path):
    os.environ.update(SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="3,5")
    assert jobenv.claim_gpus(1, lock_dir=tmp_path) == "3"
    os.environ["CUDA_VISIBLE_DEVICES"] = "3,5"
    assert jobenv.claim_gpus(1, lock_dir=tmp_path) == "5"
    assert [p.name for p in tmp_path.iterdir()] == ["SLURM_JOB_ID-42"]
    # another allocation numbers its own GPUs: its "3" is not this one's
    os.environ.update(SLURM_JOB_ID="43", CUDA_VISIBLE_DEVICES="3")
    assert jobenv.claim_gpus(1, lock_dir=tmp_path) == "3"


def test_claiming_more_gpus_than_the_machine_has_says_what_to_change(clean_env, tmp_path):
    with pytest.raises(ValueError, match=r"claims 2 GPUs but this machine has 1 .*models.<name>.gpus"):
        jobenv.claim_gpus(2, lock_dir=tmp_path, gpus=["0"])


def test_visible_devices_limit_the_gpus_a_job_chooses_from(clean_env):
    os.environ["CUDA_VISIBLE_DEVICES"] = "2, 3"
    assert jobenv.listed_gpus() == ["2", "3"]
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    assert jobenv.listed_gpus() == []


@pytest.mark.parametrize(
    ("script", "claim"),
    [
        ("train_classifier.py", "snakemake.resources.gpu"),
        ("train_unet.py", "snakemake.resources.gpu"),
        ("evaluate.py", "0"),
        ("postprocess.py", "0"),
        ("submission.py", "0"),
    ],
)
def test_scripts_claim_gpus_before_torch_or_tensorflow_starts(script, claim):
    """CUDA_VISIBLE_DEVICES is read once, when CUDA starts: the claim must come before any
    pneumoflow stage module (which imports torch / TensorFlow) is imported."""
    body = ast.parse((REPO / "scripts" / script).read_text()).body
    calls = [i for i, node in enumerate(body) if "start(" in ast.unparse(node) and isinstance(node, ast.Expr)]
    assert len(calls) == 1 and ast.unparse(body[calls[0]]) == f"start(snakemake, gpus={claim})"
    stage_imports = [
        i
        for i, node in enumerate(body)
        if isinstance(node, ast.ImportFrom)
        and node.module.startswith("pneumoflow")
        and node.module != "pneumoflow.core.job"
    ]
    assert stage_imports and calls[0] < min(stage_imports)
