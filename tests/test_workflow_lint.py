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
    paths = ["src", "scripts", "tests", "benchmarks"]
    assert _run(str(BIN / "ruff"), "check", *paths).returncode == 0
    assert _run(str(BIN / "ruff"), "format", "--check", *paths).returncode == 0


def test_pre_commit_runs_the_linters_of_make_lint():
    import yaml

    hooks = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"]
    entries = {hook["entry"].removeprefix(".venv/bin/") for hook in hooks}
    lint = (REPO / "Makefile").read_text().split("\nlint:")[1].split("\n\n")[0]
    # each `make lint` line without its paths (pre-commit passes the changed files instead)
    commands = {
        line.strip().removeprefix("$(BIN)/").split(" src ")[0].split(" Snakefile")[0]
        for line in lint.splitlines()[1:]
    }
    assert (
        entries == {"ruff check", "ruff format --check", "snakefmt --check", "mypy"} and entries <= commands
    )


def test_mypy_is_clean():
    result = _run(str(BIN / "mypy"))  # the files and settings of pyproject.toml's [tool.mypy]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
