"""Soak: N pipeline runs in a row in one folder, each with another learning rate.

    .venv/bin/python benchmarks/bench_soak.py [--runs 10] [--workdir DIR] [--resume]

The tiny sample of the end-to-end tests (tests/configs/tiny.yaml: 30 images of 256 px,
classifiers at 32 px, U-Net at 64 px), run after run as a user who tries learning rates
would: run i sets lr = 0.001 * (1 + i / 10) for the U-Net, VGG16 and ResNet101, so each run
retrains the three and tracks them in the same MLflow store. After each run: its exit status
and seconds, the disk use of results/ and of the MLflow store in it (mlflow.db +
mlartifacts/), the number of MLflow runs, the largest RSS of any process of the run, and
Snakemake's locks left in .snakemake/locks. The figures show whether the store grows by what
each run adds and no more; it exits 1 when a run failed or left a lock. --resume adds runs
to an earlier soak in the same folder (a long soak in parts).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import WORK, report

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
TRAINED = ("unet", "vgg16", "resnet101")

# Runs one command and prints the largest RSS (kB) of it and every process it waited for:
# ru_maxrss of RUSAGE_CHILDREN covers the whole reaped process tree, and a fresh interpreter
# per run keeps each run's figure its own.
PEAK_RSS = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def du_mb(*paths: Path) -> float:
    """Bytes on disk (allocated blocks, as `du`) under `paths`, in MB."""
    total = 0
    for path in paths:
        files = [path] if path.is_file() else path.rglob("*") if path.is_dir() else []
        total += sum(f.lstat().st_blocks * 512 for f in files if f.is_file() and not f.is_symlink())
    return total / 1e6


def mlflow_runs(db: Path) -> int:
    if not db.is_file():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute("select count(*) from runs where lifecycle_stage = 'active'").fetchone()[0]


def run_once(workdir: Path, i: int) -> dict:
    lr = round(0.001 * (1 + i / 10), 6)
    override = workdir.parent / f"soak-lr-{i}.yaml"
    override.write_text(yaml.safe_dump({"models": {m: {"lr": lr} for m in TRAINED}}))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--configfile", str(TINY), str(override)]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, *cmd], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak_kb = int(result.stderr.strip().splitlines()[-1]) if result.stderr.strip() else 0
    if result.returncode != 0:
        (workdir.parent / f"soak-run-{i}.stderr").write_text(result.stderr)
    results = workdir / "results"
    locks = sorted(p.name for p in (workdir / ".snakemake" / "locks").glob("*"))
    return {
        "run": i + 1,
        "lr": lr,
        "exit": result.returncode,
        "seconds": round(seconds),
        "results_MB": round(du_mb(results)),
        "store_MB": round(du_mb(results / "mlflow.db", results / "mlartifacts")),
        "mlflow_runs": mlflow_runs(results / "mlflow.db"),
        "peak_RSS_MB": round(peak_kb / 1024),
        "locks_left": len(locks),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=WORK / "soak" / "run")
    parser.add_argument(
        "--resume", action="store_true", help="add --runs more runs to an earlier soak in --workdir"
    )
    args = parser.parse_args()
    done = args.workdir.parent / "soak-rows.json"
    if args.workdir.exists() and not args.resume:
        raise SystemExit(f"{args.workdir} exists: remove it to start afresh, or --resume")
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = json.loads(done.read_text()) if args.resume and done.is_file() else []
    for i in range(len(rows), len(rows) + args.runs):
        rows.append(run_once(args.workdir, i))
        done.write_text(json.dumps(rows))
        print(rows[-1], flush=True)
    growth = [b["store_MB"] - a["store_MB"] for a, b in zip(rows, rows[1:], strict=False)]
    notes = {
        "workdir": str(args.workdir),
        "store growth per run after the first (MB)": growth,
        "failed runs": [r["run"] for r in rows if r["exit"] != 0],
        "runs that left a lock": [r["run"] for r in rows if r["locks_left"]],
    }
    report("soak", rows, notes)
    return 1 if notes["failed runs"] or notes["runs that left a lock"] else 0


if __name__ == "__main__":
    sys.exit(main())
