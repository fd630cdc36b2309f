"""Training of the VGG16 / ResNet101 classifiers (one module for both, chosen by name).

With ImageNet weights, as in the seed study: CrossEntropyLoss, SGD(lr 0.001,
momentum 0.9, weight decay 0.01), StepLR(step 10, gamma 0.1), the weights with
the best val accuracy kept. Without pretrained weights the linear probe of
models.classifiers trains with Adam(lr, weight decay) and the same schedule.
Afterwards the operating threshold is chosen on the validation split (Youden's J)
and saved with the model. Saving and resuming: training.checkpoints; the frozen
backbone's features, computed once: training.feature_cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from pneumoflow.core import schema
from pneumoflow.core.atomic import atomic_path
from pneumoflow.core.diskrows import DiskRows
from pneumoflow.formats import arrays
from pneumoflow.models import classifiers, thresholds, torchdata
from pneumoflow.tracking.model_run import ModelRun
from pneumoflow.training import checkpoints
from pneumoflow.training.feature_cache import (
    backbone_batches,
    feature_files,
    feature_loaders,
    features_to_input,
    images_to_input,
    uses_feature_cache,
)

log = logging.getLogger(__name__)


# every default from the schema (config models.<vgg16|resnet101>), augment flattened
_SCHEMA_DEFAULTS = schema.defaults("models.vgg16")
_DEFAULTS = {**_SCHEMA_DEFAULTS, **_SCHEMA_DEFAULTS["augment"]}


@dataclass(frozen=True)
class ClassifierConfig:
    """One classifier's training settings (config `models.<name>`)."""

    name: str
    img_size: int = _DEFAULTS["img_size"]
    weights: str | None = _DEFAULTS["weights"]
    epochs: int = _DEFAULTS["epochs"]
    batch_size: int = _DEFAULTS["batch_size"]
    lr: float = _DEFAULTS["lr"]
    momentum: float = _DEFAULTS["momentum"]
    weight_decay: float = _DEFAULTS["weight_decay"]
    step_size: int = _DEFAULTS["step_size"]
    gamma: float = _DEFAULTS["gamma"]
    hflip: bool = _DEFAULTS["hflip"]
    rotate_degrees: float = _DEFAULTS["rotate_degrees"]
    scale: float = _DEFAULTS["scale"]
    seed: int = _DEFAULTS["seed"]
    amp: bool = _DEFAULTS["amp"]
    cache_features: bool | str = _DEFAULTS["cache_features"]

    @classmethod
    def from_config(cls, name: str, section: dict) -> ClassifierConfig:
        """From config `models.<name>`: `augment` flattened; job resources and the switch left out."""
        values = {k: v for k, v in section.items() if k not in (*schema.JOB_KEYS, "augment")}
        return cls(name=name, **values, **section.get("augment", {}))

    def on(self, device: torch.device) -> ClassifierConfig:
        """The settings as they take effect on `device`: amp only on a GPU. On the CPU, bf16
        autocast would change the numbers (the schema says amp is ignored there), and a run with
        amp: true must be the same run, fingerprint included, as one with amp: false."""
        return dataclasses.replace(self, amp=self.amp and device.type == "cuda")


def training_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_split(npz_paths: Sequence[str | Path], name: str) -> tuple[DiskRows, np.ndarray]:
    """(images: N rows of (S, S) uint8, read from the .npz files as needed; labels (N,) uint8)
    of one split; clear error when empty. Memory: the labels, not the images."""
    labels = arrays.load_arrays(npz_paths, keys=("labels",))["labels"]
    if len(labels) == 0:
        raise ValueError(f"the {name} split has no images; add data or change split fractions")
    return DiskRows([(path, "images") for path in npz_paths]), labels


def fit_standardize(model: nn.Module, batches) -> None:
    """Set the probe's Standardize buffers to the mean and std of (B, D) feature `batches`."""
    total, total_sq, n = 0.0, 0.0, 0
    for batch in batches:
        batch = np.asarray(batch, np.float64)
        total, total_sq, n = total + batch.sum(0), total_sq + (batch**2).sum(0), n + len(batch)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0)) + 1e-6
    standardize = model.head[0]
    standardize.mean.copy_(torch.from_numpy(mean).float())
    standardize.std.copy_(torch.from_numpy(std).float())


def train_one_epoch(
    model, loader, criterion, optimizer, device, scaler, cfg, prepare=images_to_input
) -> tuple[float, float]:
    """One pass over `loader`; returns (mean loss, accuracy). `prepare` turns a batch into input."""
    classifiers.set_train_mode(model)
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        x = prepare(images, device)
        labels = labels.to(device)
        with torch.autocast(device.type, enabled=cfg.on(device).amp):
            logits = model(x)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    return total_loss / seen, correct / seen


@torch.inference_mode()
def evaluate(model, loader, criterion, device, prepare=images_to_input) -> tuple[float, float, np.ndarray]:
    """(mean loss, accuracy, pneumonia probabilities (N,) float32) over `loader`."""
    model.eval()
    total_loss, correct, probs = 0.0, 0, []
    for images, labels in loader:
        x = prepare(images, device)
        logits = model(x).float()
        labels = labels.to(device)
        total_loss += criterion(logits, labels).item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        probs.append(logits.softmax(1)[:, 1].cpu().numpy())
    n = len(loader.dataset)
    return total_loss / n, correct / n, np.concatenate(probs) if probs else np.zeros(0, np.float32)


def make_optimizer(cfg: ClassifierConfig, model: nn.Module, kind: str, device) -> torch.optim.Optimizer:
    """The seed's SGD for ImageNet heads; Adam for the linear probe (SGD at lr 0.001 needs far more
    epochs to fit a linear layer on 3,840 standardized features)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if kind == classifiers.PROBE_HEAD:
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # one fused kernel instead of several passes over the weights: VGG16's 120M-parameter
    # head steps 5x faster on CPU (benchmarks/README.md)
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )


@dataclass
class EpochData:
    """What the epochs read: the backbone's cached features (the head trains on them) or the
    images (the whole model runs); `train_features` are the cached train rows, if any."""

    train_loader: DataLoader
    val_loader: DataLoader
    prepare: object  # (batch, device) -> the input of the network trained
    train_features: DiskRows | None = None


def image_loaders(cfg: ClassifierConfig, train, val, threads: int) -> tuple[DataLoader, DataLoader]:
    transform = torchdata.augmentation(cfg.hflip, cfg.rotate_degrees, cfg.scale)
    workers = max(threads - 1, 0)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(
        torchdata.ArrayDataset(train[0], train[1], transform),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=workers,
    )
    val_loader = DataLoader(torchdata.ArrayDataset(*val), batch_size=cfg.batch_size, num_workers=workers)
    return train_loader, val_loader


@contextlib.contextmanager
def epoch_data(
    cfg: ClassifierConfig, backbone, train, val, device, checkpoint: Path, threads: int
) -> Iterator[EpochData]:
    """The loaders of the epochs; cached features are deleted at the end (good for this job only)."""
    files = feature_files(checkpoint)
    try:
        if uses_feature_cache(cfg):
            train_loader, val_loader = feature_loaders(cfg, backbone, train, val, device, files)
            yield EpochData(train_loader, val_loader, features_to_input, train_loader.dataset.rows)
        else:
            yield EpochData(*image_loaders(cfg, train, val, threads), images_to_input)
    finally:
        for path in files:
            path.unlink(missing_ok=True)


def metrics_of(row: dict) -> dict:
    """A history row as MLflow metrics (the epoch is their step)."""
    return {k: v for k, v in row.items() if k != "epoch"}


def fit(
    cfg: ClassifierConfig,
    train,
    val,
    *,
    model_out: Path,
    checkpoint: Path,
    run: ModelRun,
    fingerprint: str,
    threads: int = 1,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Train on `train` and `val` ((images, labels) each, from load_split), keep the
    best-val-accuracy weights (ties: lower val loss) at `model_out` (save_model); return
    (history table, val probabilities (N,) float32 of the kept weights).

    A checkpoint is written after an epoch when checkpoints.CheckpointPacer says it is due (a
    small head after the first and the last epoch at least); a later call with the same
    fingerprint resumes at the epoch after the last checkpoint.
    """
    torch.manual_seed(cfg.seed)  # also fixes the probe's random backbone
    device = training_device()
    cfg = cfg.on(device)
    if device.type == "cpu":
        torch.set_num_threads(max(threads, 1))
    model, kind = classifiers.build_classifier(cfg.name, cfg.weights)
    model = model.to(device, memory_format=torch.channels_last)
    trainable, frozen = classifiers.count_parameters(model)
    log.info(
        "%s (%s head) on %s: %d trainable, %d frozen parameters", cfg.name, kind, device, trainable, frozen
    )
    optimizer = make_optimizer(cfg, model, kind, device)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp)
    criterion = nn.CrossEntropyLoss()

    progress = checkpoints.resume(checkpoint, fingerprint, model, optimizer, scheduler)
    if progress.start:
        log.info("resuming from %s at epoch %d of %d", checkpoint, progress.start + 1, cfg.epochs)
    for row in progress.history:  # the new MLflow run gets the earlier epochs too
        run.log_metrics(metrics_of(row), step=row["epoch"])
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    backbone, head = classifiers.split_backbone(cfg.name, model)

    with epoch_data(cfg, backbone, train, val, device, checkpoint, threads) as data:
        net = model if data.train_features is None else head
        for _ in range(progress.start):  # a resumed run draws the batch orders the first run would have
            list(data.train_loader.sampler)
        if kind == classifiers.PROBE_HEAD and progress.start == 0:
            fit_standardize(model, _train_feature_batches(data, backbone, train, device, cfg))

        pacer, unsaved_best = checkpoints.CheckpointPacer(), None
        for epoch in range(progress.start, cfg.epochs):
            started = time.perf_counter()
            train_loss, train_acc = train_one_epoch(
                net, data.train_loader, criterion, optimizer, device, scaler, cfg, data.prepare
            )
            val_loss, val_acc, _ = evaluate(net, data.val_loader, criterion, device, data.prepare)
            scheduler.step()
            row = dict(
                epoch=epoch,
                train_loss=train_loss,
                train_acc=train_acc,
                val_loss=val_loss,
                val_acc=val_acc,
                lr=optimizer.param_groups[0]["lr"],
                seconds=time.perf_counter() - started,
            )
            progress.history.append(row)
            run.log_metrics(metrics_of(row), step=epoch)
            log.info(
                "epoch %d/%d %s", epoch + 1, cfg.epochs, {k: round(v, 4) for k, v in metrics_of(row).items()}
            )
            if (val_acc, -val_loss) > progress.best:
                progress.best = (val_acc, -val_loss)
                unsaved_best = checkpoints.copied(checkpoints.changing_state(model))
            # model_out follows the last epoch at once: a large head that trained only a few
            # seconds since its last checkpoint is not written twice
            last = epoch == cfg.epochs - 1
            if pacer.due(checkpoints.state_bytes(model, optimizer), last_epoch=last):
                with pacer.writing():
                    checkpoints.save(
                        checkpoint, model, optimizer, scheduler, progress,
                        fingerprint=fingerprint, config=dataclasses.asdict(cfg), unsaved_best=unsaved_best,
                    )  # fmt: skip
                unsaved_best = None

        if unsaved_best is None:
            checkpoints.load_best(checkpoint, model)
        else:
            model.load_state_dict(unsaved_best, strict=False)
        _, _, val_probs = evaluate(net, data.val_loader, criterion, device, data.prepare)
    threshold = thresholds.youden_threshold(val[1], val_probs)
    save_model(model_out, model.cpu(), cfg, kind, threshold)
    return pd.DataFrame(progress.history), val_probs


def _train_feature_batches(data: EpochData, backbone, train, device, cfg: ClassifierConfig):
    """(B, D) batches of the train split's backbone features, for the probe's standardization."""
    if data.train_features is None:
        return backbone_batches(backbone, train[0], device, cfg.batch_size)
    rows = data.train_features
    return (np.asarray(rows[i])[None] for i in range(len(rows)))


def save_model(path: Path, model: nn.Module, cfg: ClassifierConfig, kind: str, threshold: float) -> None:
    """model.pt: the state dict with what inference needs to rebuild and use it, so that predict
    and evaluate need no config (loads with torch.load(weights_only=True);
    classifier_inference.load_classifier reads it)."""
    with atomic_path(path) as tmp:
        torch.save(
            {
                "arch": cfg.name,
                "head": kind,
                "img_size": cfg.img_size,
                "normalization": torchdata.NORMALIZATION,
                "threshold": threshold,
                "threshold_rule": thresholds.RULE,
                "description": describe_head(cfg, kind),
                "state_dict": model.state_dict(),
            },
            tmp,
        )


def describe_head(cfg: ClassifierConfig, kind: str) -> str:
    """One line saying what was trained, for the log, MLflow and the report."""
    if kind == classifiers.PROBE_HEAD:
        return PROBE_NOTE.format(name=cfg.name)
    return f"seed recipe: {cfg.weights} weights, backbone frozen, the seed's head trained with SGD"


PROBE_NOTE = (
    "no pretrained weights (weights: null): linear probe on the frozen random-init backbone's pooled "
    "features, trained with Adam; the seed study fine-tuned a head on ImageNet features with SGD "
    "(set models.{name}.weights: imagenet for that)"
)
