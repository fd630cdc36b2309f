"""The frozen backbone's features, computed once per training job.

The backbone never trains, so without augmentation every epoch would push the same images
through it: the features of train and val are computed once, kept in .npy files beside the
checkpoint for the job's length, and the epochs train the head on them (VGG16: 5.5x faster,
benchmarks/README.md). Batched and shuffled exactly as the image loaders are.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pneumoflow.core.diskrows import DiskRows, save_rows
from pneumoflow.models import torchdata

log = logging.getLogger(__name__)


def images_to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, 1, S, S) uint8 batch -> the network's (B, 3, S, S) float32 input on `device`."""
    return torchdata.to_model_input(images.to(device)).contiguous(memory_format=torch.channels_last)


def features_to_input(features: torch.Tensor, device: torch.device) -> torch.Tensor:
    return features.to(device)


def uses_feature_cache(cfg) -> bool:
    """cache_features: auto -> on without augmentation (the backbone is always frozen); true insists."""
    augmented = cfg.hflip or cfg.rotate_degrees > 0 or cfg.scale > 0
    if cfg.cache_features is True and augmented:
        raise ValueError(
            f"models.{cfg.name}.cache_features: true needs no augmentation (augmented images give "
            "new features every epoch); use auto or false"
        )
    return cfg.cache_features is True or (cfg.cache_features == "auto" and not augmented)


@torch.inference_mode()
def backbone_batches(backbone: nn.Module, images, device, batch_size: int, amp: bool = False):
    """Yield (B, D) float32 numpy features of the (S, S) uint8 `images` through the frozen backbone
    (computed in float16 under `amp`, as the training step's forward pass is)."""
    backbone.eval()
    for start in range(0, len(images), batch_size):
        batch = np.stack([images[i] for i in range(start, min(start + batch_size, len(images)))])
        with torch.autocast(device.type, enabled=amp):
            features = backbone(images_to_input(torch.from_numpy(batch).unsqueeze(1), device))
        yield features.float().cpu().numpy()


def compute_features(
    backbone: nn.Module, images, device, batch_size: int, out: Path, amp: bool = False
) -> DiskRows:
    """The (D,) float32 features of each (S, S) uint8 image through the frozen backbone, written
    to the .npy file `out` batch by batch (VGG16's are 100 kB per image at 224 px)."""
    return save_rows(out, backbone_batches(backbone, images, device, batch_size, amp), len(images))


def feature_files(checkpoint: Path) -> tuple[Path, Path]:
    """Where a job's train and val features live: beside its checkpoint."""
    train, val = (checkpoint.with_name(f"features-{s}-{checkpoint.stem}.npy") for s in ("train", "val"))
    return train, val


def feature_loaders(
    cfg, backbone, train, val, device, files: tuple[Path, Path]
) -> tuple[DataLoader, DataLoader]:
    """Loaders of cached backbone features (kept in `files`) with the labels of `train` and `val`
    ((images, labels) each)."""
    started = time.perf_counter()
    # train features as the training step's forward pass makes them (float16 under amp), val
    # features in float32 as evaluate() and the evaluate stage make them
    feats = [
        compute_features(backbone, images, device, cfg.batch_size, out, amp)
        for (images, _), out, amp in zip((train, val), files, (cfg.amp, False), strict=True)
    ]
    log.info(
        "cached %s backbone features (%d, %s) in %.1fs",
        cfg.name,
        len(feats[0]),
        feats[0].row_shape,
        time.perf_counter() - started,
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    train_set, val_set = (torchdata.RowDataset(f, y) for f, (_, y) in zip(feats, (train, val), strict=True))
    return (
        DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=generator),
        DataLoader(val_set, batch_size=cfg.batch_size),
    )
