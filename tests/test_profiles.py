"""The shipped profiles: valid Snakemake options, and the PBS status script's answers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted((REPO / "profiles").glob("*/config.yaml"))
TRAINING_RULES = {"train_unet", "train_vgg16", "train_resnet101"}


@pytest.fixture(scope="module")
def snakemake_options() -> set[str]:
    help_text = subprocess.run(
        [sys.executable, "-m", "snakemake", "--help"], capture_output=True, text=True, check=True
    ).stdout
    return {word[2:].rstrip(",") for word in help_text.split() if word.startswith("--")}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.parent.name)
def test_profile_keys_are_snakemake_options(profile, snakemake_options):
    settings = yaml.safe_load(profile.read_text())
    unknown = set(settings) - snakemake_options
    assert not unknown, f"{profile}: not Snakemake options: {sorted(unknown)}"


@pytest.mark.parametrize("name", ["slurm", "cluster-generic"])
def test_cluster_profiles_give_training_a_gpu_and_a_jobs_limit(name):
    settings = yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())
    assert settings["jobs"] >= 1
    assert {"mem_mb", "runtime"} <= set(settings["default-resources"])
    for rule in TRAINING_RULES:
        assert settings["set-resources"][rule]["gpu"] == 1, rule
        assert settings["set-resources"][rule]["mem_mb"] > settings["default-resources"]["mem_mb"]


def test_default_profile_limits_gpus():
    settings = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    assert settings["resources"]["gpu"] == 1
    assert "params" in settings["rerun-triggers"]


QSTAT = {
    "running": "Job Id: 7.pbs\n    job_state = R\n",
    "queued": "Job Id: 7.pbs\n    job_state = Q\n",
    "finished ok": "Job Id: 7.pbs\n    job_state = F\n    Exit_status = 0\n",
    "finished bad": "Job Id: 7.pbs\n    job_state = F\n    Exit_status = 1\n",
    "torque done": "Job Id: 7.pbs\n    job_state = C\n    exit_status = 0\n",
}


def run_with_fake(tmp_path: Path, command: str, fake_body: str, script: str, *args: str) -> str:
    """Run a profile script with a fake `command` (shell body) first on PATH; return its stdout."""
    fake = tmp_path / command
    fake.write_text(f"#!/bin/sh\n{fake_body}")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    path = REPO / "profiles/cluster-generic" / script
    return subprocess.run(
        [path, *args], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize(
    ("case", "expected"),
    [("running", "running"), ("queued", "running"), ("finished ok", "success"),
     ("finished bad", "failed"), ("torque done", "success")],
)  # fmt: skip
def test_pbs_status_script(tmp_path, case, expected):
    out = run_with_fake(tmp_path, "qstat", f"cat <<'OUT'\n{QSTAT[case]}OUT\n", "status.sh", "7.pbs")
    assert out.strip() == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [("qstat: Unknown Job Id 7.pbs", "failed"), ("qstat: cannot connect to server", "running")],
)
def test_pbs_status_script_when_qstat_fails(tmp_path, message, expected):
    out = run_with_fake(tmp_path, "qstat", f"echo '{message}' >&2\nexit 1\n", "status.sh", "7.pbs")
    assert out.strip() == expected


def test_pbs_submit_script_turns_resources_into_qsub_options(tmp_path):
    args = ["train_unet", "4", "32000", "90", "1", "gpuq", "job.sh"]
    out = run_with_fake(tmp_path, "qsub", 'echo "$@"\n', "submit.sh", *args)
    assert out.split() == [
        "-V", "-N", "smk.train_unet", "-q", "gpuq", "-l", "select=1:ncpus=4:mem=32000mb:ngpus=1",
        "-l", "walltime=01:30:00", "-j", "oe", "-o", "logs/cluster/", "job.sh",
    ]  # fmt: skip
