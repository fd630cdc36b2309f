"""Peak memory of the evaluate stage: the test split in many shards, evaluated in a fresh process.

    .venv/bin/python benchmarks/bench_evaluate_memory.py [--shards 8] [--per-shard 500] [--size 256]
        [--repo /path/to/other/checkout ...]

Writes `shards` test .npz files of `per-shard` random images each (the arrays stage's layout)
and a pixel-baseline model, then runs pneumoflow.stages.evaluate.run(model="baseline", ...) once per
checkout given (default: this one) in a fresh interpreter, and prints its peak RSS beside the
size of the whole split and of one shard. The baseline stands for every model here: the stage
reads the shards the same way for all of them, and it needs no framework import.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from common import WORK, report

REPO = Path(__file__).resolve().parents[1]

RUN = """
import resource, sys
from pneumoflow.stages.evaluate import run
run(model="baseline", model_file=sys.argv[1], test=sys.argv[5:], manifest=sys.argv[2], boxes=sys.argv[3],
    run_id=sys.argv[4], metrics=sys.argv[4] + ".out/metrics.json")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def test_split(folder: Path, shards: int, per_shard: int, size: int) -> tuple[list[Path], Path, Path, Path]:
    """(npz paths, model.json, manifest.tsv, boxes.tsv) of a generated test split (made once)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths, rows = [], []
    for shard in range(shards):
        path = folder / f"{shard:02d}.npz"
        ids = np.array([f"p{shard:02d}-{i:05d}" for i in range(per_shard)])
        labels = (np.arange(per_shard) % 2).astype(np.uint8)
        if not path.exists():
            images = rng.integers(0, 256, (per_shard, size, size), dtype=np.uint8)
            images[labels == 1, : size // 2] //= 2  # something for the model to see
            np.savez(
                path, images=images, masks=np.zeros_like(images), labels=labels,
                classes=np.array(["Normal"] * per_shard), patient_ids=ids,
            )  # fmt: skip
        paths.append(path)
        rows += [(pid, "test", shard, int(label), size, size) for pid, label in zip(ids, labels, strict=True)]
    manifest = folder / "manifest.tsv"
    pd.DataFrame(rows, columns=["patientId", "split", "shard", "target", "rows", "cols"]).to_csv(
        manifest, sep="\t", index=False
    )
    boxes = folder / "boxes.tsv"
    pd.DataFrame(columns=["patientId", "x", "y", "width", "height"]).to_csv(boxes, sep="\t", index=False)
    pixels = 16
    model = {
        "pixels": pixels, "img_size": size, "C": 1.0, "mean": [0.5] * pixels**2, "scale": [0.3] * pixels**2,
        "coef": [0.01] * pixels**2, "intercept": 0.0, "threshold": 0.5, "threshold_rule": "fixed",
    }  # fmt: skip
    model_path = folder / "model.json"
    model_path.write_text(json.dumps(model))
    return paths, model_path, manifest, boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--per-shard", type=int, default=500)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repo", type=Path, action="append", help="checkouts to measure (default: this one)")
    args = parser.parse_args()
    folder = WORK / f"evaluate-{args.shards}x{args.per_shard}-{args.size}"
    paths, model, manifest, boxes = test_split(folder, args.shards, args.per_shard, args.size)
    run_id = folder / "run_id.txt"
    run_id.write_text("")
    split_mb = sum(p.stat().st_size for p in paths) / 2**20
    rows = []
    for repo in args.repo or [REPO]:
        result = subprocess.run(
            [sys.executable, "-c", RUN, str(model), str(manifest), str(boxes), str(run_id), *map(str, paths)],
            env={"PYTHONPATH": str(repo / "src"), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
        peak = float(result.stdout.split()[-1])
        rows.append({"checkout": str(repo), "peak RSS MB": peak})
    report(
        "evaluate_memory",
        rows,
        {
            "test split": f"{args.shards} shards x {args.per_shard} images of {args.size} px "
            f"({split_mb:.0f} MB of .npz, images and masks; one shard {split_mb / args.shards:.0f} MB)",
        },
    )


if __name__ == "__main__":
    main()
