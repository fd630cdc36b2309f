"""The tiny pipeline on a real local Slurm, through profiles/slurm and through cluster-generic.

Each run must send every non-local job to Slurm and produce what a local run produces; the
Slurm-profile run has every rule, the cluster-generic one all but the U-Net's chain.
Skipped, with the reason, where this machine cannot run Slurm (.ci/run installs it); under
CI=true that skip fails the run unless PNEUMOFLOW_ALLOW_SKIP allows it (tests/skipguard.py).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SNAKEMAKE, TINY
from localslurm import LocalSlurm, unavailable_reason

pytestmark = [pytest.mark.e2e, pytest.mark.needs("cluster")]

# Rules that run on the submit host (Snakefile `localrules`, plus the target rule).
LOCAL_RULES = {"all", "qc_rejected", "report"}
CLUSTER_RULES = {
    "synthetic_sample", "manifest", "dicom_to_jpg", "masks", "arrays",
    "train_unet", "train_resnet101", "train_baseline", "postprocess", "evaluate", "submission",
}  # fmt: skip
# A laptop-sized node has no GPU and less memory than the profile asks for training.
CONFIG = ["--configfile", str(TINY), str(REPO / "tests/configs/cluster.yaml")]
MODELS = ("unet", "resnet101")  # cluster.yaml switches VGG16 off
# The cluster-generic run leaves the U-Net chain to the Slurm-profile run: its scripts submit
# every rule the same way, and TensorFlow's imports in four more jobs cost ~2 min of CPU.
GENERIC_MODELS = ("resnet101",)
GENERIC_RULES = CLUSTER_RULES - {"train_unet", "postprocess", "submission"}
NO_GPU = [f"train_{m}:gpu=0" for m in MODELS]
# what the local reference run builds: every data stage (one shard, 32 px arrays)
DATA_TARGETS = [
    "results/qc/rejected.tsv",
    *(f"results/arrays/32px/{s}/00.npz" for s in ("train", "val", "test")),
]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"cannot run a local Slurm here: {reason}")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    yield cluster
    cluster.stop()


def _command(workdir: Path, *args: str) -> list[str]:
    return [*SNAKEMAKE, "--directory", str(workdir), *CONFIG, *args]


@pytest.fixture(scope="module")
def runs(slurm, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """{name: (workdir, result)} of a Slurm-profile and a cluster-generic run of the same
    config (the generic one without the U-Net), and of a local run of its data stages (the
    byte-for-byte reference: the models' numbers may differ in float noise, so a local
    training would add time and no check).
    They run at the same time: the cluster runs mostly wait on the scheduler."""
    scripts = REPO / "tests" / "cluster"
    no_unet = tmp_path_factory.mktemp("generic-config") / "no-unet.yaml"
    no_unet.write_text("models: {unet: {enabled: false}}\n")
    commands = {
        "local": ["--cores", "2", *DATA_TARGETS],
        "slurm": [
            "--profile", "profiles/slurm",
            # what a one-node test cluster needs instead of the profile's placeholders
            "--default-resources", "slurm_partition=debug", "mem_mb=1000", "runtime=30",
            "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "1",
            "--set-resources", *NO_GPU,
        ],
        "generic": [
            "--executor", "cluster-generic", "--jobs", "4", "--latency-wait", "30",
            "--cluster-generic-submit-cmd",
            f"{scripts / 'sbatch_submit.sh'} {{rule}} {{threads}} {{resources.mem_mb}}",
            "--cluster-generic-status-cmd", str(scripts / "squeue_status.sh"),
            "--cluster-generic-cancel-cmd", "scancel",
            "--default-resources", "mem_mb=1000",
            "--configfile", *CONFIG[1:], str(no_unet),
        ],
    }  # fmt: skip
    started = {}
    for name, args in commands.items():
        workdir = tmp_path_factory.mktemp(name)
        log = open(workdir.parent / f"{name}.stderr", "w+")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(_command(workdir, *args), cwd=REPO, env=slurm.env, stderr=log, text=True)
        started[name] = (workdir, proc, log)
    results = {}
    for name, (workdir, proc, log) in started.items():
        code = proc.wait(timeout=1200)
        log.seek(0)
        results[name] = (workdir, subprocess.CompletedProcess(proc.args, code, "", log.read()))
        log.close()
    return results


def slurm_rules(slurm: LocalSlurm, job_ids: set[str]) -> dict[str, str]:
    """{slurm job id: rule} of the given jobs, read back from Slurm (the rule is in the job comment)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i|%k|%T"], env=slurm.env, capture_output=True, text=True
    ).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, comment, state = line.split("|")
        if job_id in job_ids:
            assert state == "COMPLETED", line
            jobs[job_id] = re.match(r"rule_(\w+?)(_wildcards.*)?$", comment).group(1)
    return jobs


def assert_same_outputs(run: Path, reference: Path, models: tuple[str, ...] = MODELS) -> None:
    """Data files byte for byte and arrays by content, as the local `reference` made them;
    each model's test metrics and the report are there."""
    for folder in ("data/synthetic", "results/jpg", "results/masks", "results/qc"):
        files = sorted(p.relative_to(reference) for p in (reference / folder).rglob("*") if p.is_file())
        assert files, folder
        for rel in files:
            assert (run / rel).read_bytes() == (reference / rel).read_bytes(), rel
    for name in ("manifest.tsv", "boxes.tsv"):
        assert (run / "results" / name).read_bytes() == (reference / "results" / name).read_bytes()
    npz = sorted(p.relative_to(reference) for p in (reference / "results/arrays").rglob("*.npz"))
    for rel in npz:
        with np.load(run / rel) as got, np.load(reference / rel) as want:
            for key in want.files:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{rel}:{key}")
    assert npz
    for model in models:
        metrics = json.loads((run / f"results/eval/{model}/metrics.json").read_text())
        expected = {"dice", "rsna_score"} if model == "unet" else {"roc_auc", "accuracy"}
        assert expected <= metrics.keys(), model
    assert (run / "results/report/report.html").stat().st_size > 0


def test_local_reference_run(runs):
    workdir, result = runs["local"]
    assert result.returncode == 0, result.stderr[-4000:]


def test_slurm_profile_runs_every_rule_as_a_slurm_job(slurm, runs):
    workdir, result = runs["slurm"]
    assert result.returncode == 0, result.stderr[-4000:]
    logged = set(re.findall(r"submitted with SLURM jobid (\d+)", result.stderr))
    assert logged and logged <= slurm.job_ids()
    assert sorted(slurm_rules(slurm, logged).values()) == sorted(planned_cluster_jobs(result.stderr))
    assert set(slurm_rules(slurm, logged).values()) == CLUSTER_RULES
    assert set(re.findall(r"localrule (\w+):", result.stderr)) == LOCAL_RULES
    assert_same_outputs(workdir, runs["local"][0])


def test_cluster_generic_runs_each_job_through_its_scripts(slurm, runs):
    workdir, result = runs["generic"]
    assert result.returncode == 0, result.stderr[-4000:]
    logged = set(re.findall(r"with external jobid '(\d+)'", result.stderr))
    assert logged and logged <= slurm.job_ids()
    assert not logged & set(re.findall(r"SLURM jobid (\d+)", runs["slurm"][1].stderr))
    assert sorted(slurm_rules(slurm, logged).values()) == sorted(planned_cluster_jobs(result.stderr))
    assert set(slurm_rules(slurm, logged).values()) == GENERIC_RULES
    assert_same_outputs(workdir, runs["local"][0], GENERIC_MODELS)
    for model in GENERIC_MODELS:  # the same metrics as the Slurm-profile run, key for key
        got = json.loads((workdir / f"results/eval/{model}/metrics.json").read_text())
        want = json.loads((runs["slurm"][0] / f"results/eval/{model}/metrics.json").read_text())
        assert got.keys() == want.keys(), model


def planned_cluster_jobs(stderr: str) -> list[str]:
    """Rule of every non-local job in the run's job stats table, once per job."""
    table = stderr[stderr.index("Job stats:") :].split("\n\n")[0]
    jobs = []
    for line in table.splitlines()[3:]:
        rule, count = line.split()
        if rule not in LOCAL_RULES and rule != "total":
            jobs += [rule] * int(count)
    return jobs
