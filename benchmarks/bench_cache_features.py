"""Classifier training with a frozen backbone: cached features vs recomputing them every epoch.

    .venv/bin/python benchmarks/bench_cache_features.py [--epochs 5] [--n 96] [--size 128]

Both runs use the same seed, data and settings (no augmentation); only
models.<m>.cache_features differs. With --every-epoch a third run caches and writes the
checkpoint after every epoch, as training did before CheckpointPacer. No ImageNet file
exists offline, so the frozen backbone is torchvision's randomly initialised one saved as a
weight file: the time per run does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from common import report

from pneumoflow.training import checkpoints
from pneumoflow.training.classifier import ClassifierConfig, fit


class NoTracking:
    run_id = None

    def log_metrics(self, metrics, step=None):
        pass


def toy_split(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size) uint8 noise; pneumonia images carry a bright patch."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, (n, size, size), dtype=np.uint8)
    labels = (np.arange(n) % 2).astype(np.uint8)
    images[labels == 1, size // 4 : size // 2, size // 4 : size // 2] = 220
    return images, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n", type=int, default=96, help="training images (val: a third of it)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet101"])
    parser.add_argument("--every-epoch", action="store_true", help="also cache with a checkpoint every epoch")
    args = parser.parse_args()
    train, val = toy_split(args.n, args.size, 1), toy_split(args.n // 3, args.size, 2)
    rows, paced = [], checkpoints.CheckpointPacer.WORK_PER_WRITE
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            weights = Path(tmp) / f"{name}.pth"
            torch.manual_seed(0)
            torch.save(getattr(torchvision.models, name)(weights=None).state_dict(), weights)
            result = {}
            # (cache, checkpoint after every epoch as before CheckpointPacer)
            runs = ((False, False), (True, False)) + (((True, True),) if args.every_epoch else ())
            for cache, every_epoch in runs:
                cfg = ClassifierConfig(
                    name, img_size=args.size, weights=str(weights), epochs=args.epochs, batch_size=16,
                    lr=0.01, cache_features=cache,
                )  # fmt: skip
                checkpoints.CheckpointPacer.WORK_PER_WRITE = 0 if every_epoch else paced
                started = time.perf_counter()
                history, _ = fit(
                    cfg, train, val, model_out=Path(tmp) / f"{name}-{cache}.pt",
                    checkpoint=Path(tmp) / f"{name}-{cache}-{every_epoch}-ck.pt", run=NoTracking(),
                    fingerprint="bench", threads=torch.get_num_threads(),
                )  # fmt: skip
                result[cache, every_epoch] = (time.perf_counter() - started, history)
            checkpoints.CheckpointPacer.WORK_PER_WRITE = paced
            (slow, h_slow), (fast, h_fast) = result[False, False], result[True, False]
            every = result[True, True][0] if args.every_epoch else float("nan")
            rows.append(
                {
                    "model": name,
                    "recompute s": slow,
                    "cached s": fast,
                    "speed-up": slow / fast,
                    "cached, checkpoint every epoch s": every,
                    "speed-up then": slow / every,
                    "val_acc recompute": float(h_slow.val_acc.iloc[-1]),
                    "val_acc cached": float(h_fast.val_acc.iloc[-1]),
                    "max |val_loss diff|": float(np.abs(h_slow.val_loss - h_fast.val_loss).max()),
                }
            )
    report(
        "cache_features",
        rows,
        {"run": f"{args.epochs} epochs, {args.n} train / {args.n // 3} val images of {args.size} px, CPU"},
    )


if __name__ == "__main__":
    main()
