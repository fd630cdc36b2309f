"""How much the MLflow store (results/mlflow.db + results/mlartifacts) grows per VGG16 training run.

    .venv/bin/python benchmarks/bench_mlflow_store.py [--runs 2]

Runs `snakemake results/models/vgg16/model.pt` on the tests' tiny config (30 images; the
classifier at 32 px, but the model is the whole VGG16 whatever the image size) in a fresh
folder, then again with a different learning rate each time (a new fingerprint: a new run,
not a cache hit), and reads the store's size after each run. Also reports the size of
model.pt, the one file a run must keep.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common import report

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def store_bytes(workdir: Path) -> int:
    results = workdir / "results"
    return tree_bytes(results / "mlartifacts") + sum(
        p.stat().st_size for p in results.glob("mlflow.db*") if p.is_file()
    )


def train_vgg16(workdir: Path, lr: float) -> None:
    config = workdir / "lr.yaml"
    config.write_text(f"models: {{vgg16: {{lr: {lr}}}}}\n")
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--cores", "2", "--configfile", str(TINY), str(config), "--", "results/models/vgg16/model.pt",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        workdir = Path(tmp)
        before = 0
        for i in range(args.runs):
            lr = 0.001 * (i + 1)
            train_vgg16(workdir, lr)
            size = store_bytes(workdir)
            model_pt = (workdir / "results/models/vgg16/model.pt").stat().st_size
            rows.append(
                {"run": i + 1, "lr": lr, "store MB": size / 1e6, "growth MB": (size - before) / 1e6,
                 "model.pt MB": model_pt / 1e6}
            )  # fmt: skip
            before = size
    report("mlflow_store", rows, {"what": "results/mlflow.db* + results/mlartifacts after each VGG16 run"})


if __name__ == "__main__":
    main()
