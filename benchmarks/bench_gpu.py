"""GPU training throughput: the classifiers' feature pass and head epochs, and one U-Net
epoch, each with mixed precision off and on; images/s and peak GPU memory.

    .venv/bin/python benchmarks/bench_gpu.py [--arrays results/arrays/256px/train] [--n 2048]

Data: the images (and masks) of the `arrays` stage's .npz files in `--arrays` (a slice of the
full-size rehearsal's, say), repeated up to --n images; without --arrays, generated noise
images with a bright opacity box. The content does not change the work, only the count does.
Sizes are the seed study's: classifiers at 224 px (resized from the arrays with the pipeline's
own resize), the U-Net at the arrays' size (256 px in the README's figures).

Classifiers run the training module's own functions (`compute_features`, `train_one_epoch`)
with a randomly initialised backbone saved as the weight file: no download, and the time
does not depend on the weight values. The U-Net is the pipeline's Keras model compiled with
its Dice loss, fitted on arrays in memory, on whichever backend KERAS_BACKEND names
(TensorFlow by default). On the CPU the script runs too (mixed precision off only), as a
check of the script; the figures that matter come from a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from common import report
from torch import nn
from torch.utils.data import DataLoader

from pneumoflow.formats import arrays
from pneumoflow.models import classifiers, torchdata
from pneumoflow.training.classifier import ClassifierConfig, make_optimizer, train_one_epoch
from pneumoflow.training.feature_cache import compute_features, features_to_input, images_to_input


def load_images(folder: str | None, n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (n, S, S) uint8, masks (n, S, S) uint8 {0, 1}, labels (n,) int64)."""
    if folder:
        parts = sorted(Path(folder).glob("*.npz"))
        if not parts:
            raise SystemExit(f"no .npz files in {folder}: give the arrays stage's folder of one split")
        data = arrays.load_arrays(parts, keys=("images", "masks", "labels"))
        repeat = -(-n // len(data["labels"]))
        return tuple(np.concatenate([data[k]] * repeat)[:n] for k in ("images", "masks", "labels"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 90, (n, size, size), dtype=np.uint8)
    labels = np.arange(n) % 2
    masks = np.zeros_like(images)
    masks[labels == 1, size // 4 : size // 2, size // 4 : size // 2] = 1
    images[masks == 1] = 220
    return images, masks, labels


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


@contextlib.contextmanager
def stopwatch(device: torch.device, out: dict):
    reset_peak(device)
    synchronize(device)
    started = time.perf_counter()
    yield
    synchronize(device)
    out["s"], out["peak GiB"] = time.perf_counter() - started, peak_gib(device)


def classifier_rows(name, images, labels, amp, args, device, tmp: Path) -> list[dict]:
    """Feature pass over every image, head epochs on the cached features, and one uncached
    epoch (backbone forward + head step on images), as train_classifier.fit runs them."""
    weights = tmp / f"{name}.pth"
    if not weights.exists():
        torch.save(getattr(torchvision.models, name)(weights=None).state_dict(), weights)
    cfg = ClassifierConfig(name, img_size=args.size, weights=str(weights), batch_size=args.batch, amp=amp)
    cfg = cfg.on(device)
    model, kind = classifiers.build_classifier(name, cfg.weights)
    model = model.to(device, memory_format=torch.channels_last)
    backbone, head = classifiers.split_backbone(name, model)
    optimizer = make_optimizer(cfg, model, kind, device)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp)
    criterion = nn.CrossEntropyLoss()
    n, rows = len(images), []

    def row(phase: str, timing: dict, count: int) -> None:
        rows.append({"model": name, "amp": amp, "phase": phase, "images/s": count / timing["s"],
                     "seconds": timing["s"], "peak GiB": timing["peak GiB"]})  # fmt: skip

    compute_features(backbone, images[: 2 * args.batch], device, args.batch, tmp / "warm.npy", cfg.amp)
    timing = {}
    with stopwatch(device, timing):
        features = compute_features(backbone, images, device, args.batch, tmp / f"{name}.npy", cfg.amp)
    row("feature pass", timing, n)
    feature_loader = DataLoader(torchdata.RowDataset(features, labels), batch_size=args.batch, shuffle=True)
    train_one_epoch(head, feature_loader, criterion, optimizer, device, scaler, cfg, features_to_input)
    with stopwatch(device, timing):
        for _ in range(args.head_epochs):
            train_one_epoch(
                head, feature_loader, criterion, optimizer, device, scaler, cfg, features_to_input
            )
    row(f"head epoch (x{args.head_epochs})", timing, n * args.head_epochs)
    image_loader = DataLoader(
        torchdata.ArrayDataset(images, labels), batch_size=args.batch, shuffle=True, num_workers=args.workers
    )
    with stopwatch(device, timing):
        train_one_epoch(model, image_loader, criterion, optimizer, device, scaler, cfg, images_to_input)
    row("uncached epoch", timing, n)
    features.close()
    return rows


def unet_rows(images, masks, mixed: bool, args) -> list[dict]:
    """One U-Net epoch after a short warm-up (graph tracing / kernel selection)."""
    import keras

    from pneumoflow.models import unet

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    model = unet.compile_unet(unet.build_unet(images.shape[1]), 1e-3)
    x = images[..., None].astype(np.float32) / 255.0
    y = np.eye(2, dtype=np.float32)[masks]
    backend = keras.backend.backend()
    started = time.perf_counter()
    model.fit(x[: 4 * args.unet_batch], y[: 4 * args.unet_batch], batch_size=args.unet_batch, verbose=0)
    print(f"U-Net ({backend}, weights on {model.weights[0].value.device}): warm-up "
          f"{time.perf_counter() - started:.1f}s", flush=True)  # fmt: skip
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            tf.config.experimental.reset_memory_stats("GPU:0")
    elif backend == "torch" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model.fit(x, y, batch_size=args.unet_batch, epochs=1, verbose=0)
    seconds = time.perf_counter() - started  # fit returns after its last step's loss is read
    peak = float("nan")
    if backend == "tensorflow" and gpus:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    elif backend == "torch" and torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**30
    keras.mixed_precision.set_global_policy("float32")
    return [{"model": f"unet ({backend})", "amp": mixed, "phase": "epoch", "images/s": len(x) / seconds,
             "seconds": seconds, "peak GiB": peak}]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arrays", help="folder of the arrays stage's .npz files (one split)")
    parser.add_argument("--n", type=int, default=2048, help="images per pass (the data repeated up to n)")
    parser.add_argument("--size", type=int, default=224, help="classifier input px")
    parser.add_argument("--unet-size", type=int, default=256, help="U-Net px when generating data")
    parser.add_argument("--batch", type=int, default=32, help="classifier batch size")
    parser.add_argument("--unet-batch", type=int, default=16)
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the uncached epoch")
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet101", "unet"])
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precisions = (False, True) if device.type == "cuda" else (False,)
    images, masks, labels = load_images(args.arrays, args.n, args.unet_size)
    small = np.stack([arrays.resize_image(image, args.size) for image in images])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m for m in args.models if m != "unet"]:
            for amp in precisions:
                torch.manual_seed(0)
                rows += classifier_rows(name, small, labels, amp, args, device, Path(tmp))
                print(rows[-3:], flush=True)
    if "unet" in args.models:
        for mixed in precisions:
            rows += unet_rows(images, masks, mixed, args)
            print(rows[-1], flush=True)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none (CPU)"
    report(
        "gpu",
        rows,
        {
            "device": gpu,
            "data": f"{args.n} images, {args.arrays or 'generated'}; classifiers {args.size} px, "
            f"batch {args.batch}; U-Net {images.shape[1]} px, batch {args.unet_batch}",
            "versions": f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')}",
        },
    )


if __name__ == "__main__":
    main()
