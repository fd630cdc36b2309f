"""Where a run came from: git commit, config hash, versions; tags every MLflow run carries."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from pneumoflow import __version__


def git_commit(repo: str | Path) -> str:
    """HEAD of the repository at `repo` (with '-dirty' when files changed), or 'unknown'.

    Snakemake runs scripts from a copy, so MLflow's own git detection misses it.
    """
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def config_hash(config: Mapping) -> str:
    """Short sha256 of the whole config (keys sorted)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


COMMIT_ENV = "PNEUMOFLOW_GIT_COMMIT"
CONFIG_HASH_ENV = "PNEUMOFLOW_CONFIG_HASH"


def export(repo: str | Path, config: Mapping) -> None:
    """Put the commit and config hash in the environment that jobs inherit.

    Passing them as rule params instead would rerun every job whenever any
    config key or commit changes.
    """
    os.environ[COMMIT_ENV] = git_commit(repo)
    os.environ[CONFIG_HASH_ENV] = config_hash(config)


def run_tags(rule: str, data_source: str) -> dict[str, str]:
    """The tags every training and evaluation run carries."""
    commit = os.environ.get(COMMIT_ENV, "unknown")
    return {
        "mlflow.source.git.commit": commit,
        "pneumoflow.git_commit": commit,
        "pneumoflow.rule": rule,
        "pneumoflow.config_hash": os.environ.get(CONFIG_HASH_ENV, "unknown"),
        "pneumoflow.version": __version__,
        "pneumoflow.data_source": data_source,
    }
