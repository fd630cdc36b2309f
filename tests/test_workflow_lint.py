"""The workflow passes Snakemake's linter and the formatters' checks."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_snakemake_lint_is_clean():
    result = _run(str(BIN / "snakemake"), "--lint")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Congratulations, your workflow is in a good condition!" in out, out


def test_snakefmt_check():
    result = _run(str(BIN / "snakefmt"), "--check", "Snakefile", "rules")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_check_and_format():
    paths = ["src", "scripts", "tests"]
    assert _run(str(BIN / "ruff"), "check", *paths).returncode == 0
    assert _run(str(BIN / "ruff"), "format", "--check", *paths).returncode == 0
