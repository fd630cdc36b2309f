"""Memory and speed of the U-Net's input pipeline (training.unet.make_dataset) on shards of
the arrays stage's format, each checkout in a fresh process, taking turns.

    .venv/bin/python benchmarks/bench_unet_input.py [--shards 4] [--n 1500] [--size 256]
                                                    [--repo /other/checkout --repo .]

The shards hold random pixels, every third image with a square opacity mask (their content
does not change what is measured: bytes read, kept and batched). For each checkout: peak RSS
after importing it, peak RSS of two training epochs (positives only, shuffled) and two
validation passes, their seconds, and a fingerprint of every batch (position-weighted sums),
so that checkouts that read the data differently can be seen to yield the same batches in the
same order.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import WORK, report

REPO = Path(__file__).resolve().parents[1]

PASSES = """
import hashlib, re, sys, time
import tensorflow as tf
from pneumoflow.training.unet import UnetConfig, make_dataset

def peak_mb():  # VmHWM: ru_maxrss would carry over the parent's peak across fork + exec
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024

imported = peak_mb()
size, paths = int(sys.argv[1]), sys.argv[2:]
digest, images, start = hashlib.md5(), 0, time.perf_counter()
for training in (True, False):
    dataset = make_dataset(paths, UnetConfig(img_size=size, batch_size=16), training=training)
    for _ in range(2):
        for x, y in dataset:
            # a cheap fingerprint of the batch: its images' and masks' sums, weighted by position
            at = tf.reshape(tf.range(1, len(x) + 1, dtype=tf.float32), (-1, 1, 1, 1))
            digest.update(tf.stack([tf.reduce_sum(x * at), tf.reduce_sum(y * at)]).numpy().tobytes())
            images += len(x)
print(images, imported, peak_mb(), time.perf_counter() - start, digest.hexdigest()[:12])
"""


def write_shards(folder: Path, shards: int, n: int, size: int) -> list[Path]:
    """`shards` .npz files of `n` (size, size) uint8 images and masks, as the arrays stage writes."""
    paths = [folder / f"{k:02d}.npz" for k in range(shards)]
    if all(p.exists() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for path in paths:
        masks = np.zeros((n, size, size), np.uint8)
        masks[::3, size // 4 : size // 2, size // 4 : size // 2] = 1
        np.savez(
            path,
            images=rng.integers(0, 256, (n, size, size), dtype=np.uint8),
            masks=masks,
            labels=masks.any(axis=(1, 2)).astype(np.uint8),
            classes=np.array(["Lung Opacity" if m.any() else "Normal" for m in masks]),
            patient_ids=np.array([f"{path.stem}-{i}" for i in range(n)]),
        )
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--n", type=int, default=1500, help="images per shard")
    parser.add_argument("--size", type=int, default=256, help="img_size")
    parser.add_argument("--rounds", type=int, default=2, help="turns of every checkout")
    parser.add_argument(
        "--repo", type=Path, action="append", help="checkout(s) to measure side by side (default: this one)"
    )
    args = parser.parse_args()
    paths = write_shards(
        WORK / f"unet-input-{args.shards}x{args.n}-{args.size}", args.shards, args.n, args.size
    )
    shard_mb = paths[0].stat().st_size / 2**20
    rows = []
    for round_ in range(args.rounds):
        for repo in args.repo or [REPO]:
            env = {**os.environ, "PYTHONPATH": str(repo.resolve() / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
            out = subprocess.run(
                [sys.executable, "-c", PASSES, str(args.size), *map(str, paths)],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            images, imported, peak, seconds, digest = out.stdout.split()[-5:]
            rows.append(
                {
                    "checkout": str(repo),
                    "round": round_ + 1,
                    "images yielded": int(images),
                    "peak RSS after imports MB": round(float(imported)),
                    "peak RSS MB": round(float(peak)),
                    "above imports MB": round(float(peak) - float(imported)),
                    "seconds": round(float(seconds), 1),
                    "batches hash": digest,
                }
            )
    report(
        "unet_input",
        rows,
        {"shards": f"{args.shards} x {args.n} images at {args.size} px, {shard_mb:.0f} MB each"},
    )


if __name__ == "__main__":
    main()
