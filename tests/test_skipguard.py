"""tests/skipguard.py: under CI=true a skipped needs(kind) test fails unless allowed by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SAMPLE = """
import pytest

@pytest.mark.needs("cluster")
def test_on_slurm():
    pytest.skip("cannot run a local Slurm here: not installed: slurmctld")

@pytest.mark.needs("tmpfs")
def test_on_a_full_disk():
    pass

def test_unmarked():
    pytest.skip("an ordinary skip")
"""


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "PNEUMOFLOW_ALLOW_SKIP")}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "skipguard",
        "-p",
        "no:cacheprovider",
        "-rA",
        "test_sample.py",
    ]
    return subprocess.run(
        [*cmd, "test_sample.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**clean, "PYTHONPATH": str(TESTS), **env},
    )  # fmt: skip


def test_outside_ci_a_skip_stays_a_skip(tmp_path):
    result = _pytest(tmp_path)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 2 skipped" in result.stdout


def test_under_ci_a_skipped_needs_test_fails_naming_the_opt_out(tmp_path):
    result = _pytest(tmp_path, CI="true")
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed, 1 skipped" in result.stdout  # the unmarked skip stays a skip
    assert "needs cluster and skipped under CI=true: cannot run a local Slurm here" in result.stdout
    assert "PNEUMOFLOW_ALLOW_SKIP='cluster: <reason>'" in result.stdout


def test_under_ci_a_named_opt_out_allows_the_skip_and_says_why(tmp_path):
    result = _pytest(tmp_path, CI="true", PNEUMOFLOW_ALLOW_SKIP="cluster: this runner has no root")
    assert result.returncode == 0, result.stdout
    assert "1 passed, 2 skipped" in result.stdout
    assert "allowed by PNEUMOFLOW_ALLOW_SKIP: this runner has no root" in result.stdout


def test_allowing_another_kind_does_not_allow_this_one(tmp_path):
    result = _pytest(tmp_path, CI="true", PNEUMOFLOW_ALLOW_SKIP="tmpfs: no CAP_SYS_ADMIN")
    assert result.returncode == 1 and "needs cluster and skipped" in result.stdout


@pytest.mark.parametrize("value", ["cluster", "cluster:", "slurm: no root"])
def test_an_opt_out_without_kind_or_reason_stops_the_run(tmp_path, value):
    result = _pytest(tmp_path, CI="true", PNEUMOFLOW_ALLOW_SKIP=value)
    assert result.returncode == 4  # pytest's usage error, before any test runs
    assert "expected '<kind>: <reason>'" in result.stderr
