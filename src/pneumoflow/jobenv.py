"""Make the package importable in every Snakemake job, installed or not."""

from __future__ import annotations

import os
from pathlib import Path

SRC = Path(__file__).resolve().parents[1]


def export_src_path() -> None:
    """Prepend src/ to PYTHONPATH so that jobs (conda envs, cluster nodes) import this package.

    Snakemake passes the environment on to local jobs and to sbatch.
    """
    current = os.environ.get("PYTHONPATH", "")
    if str(SRC) not in current.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), current) if p)
