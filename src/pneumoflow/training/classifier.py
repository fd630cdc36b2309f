"""Training of the VGG16 / ResNet101 classifiers (one module for both, chosen by name).

With ImageNet weights, as in the seed study: CrossEntropyLoss, SGD(lr 0.001,
momentum 0.9, weight decay 0.01), StepLR(step 10, gamma 0.1), the checkpoint with
the best val accuracy kept. Without pretrained weights the linear probe of
classifiers.py trains with Adam(lr, weight decay) and the same schedule.
Afterwards the operating threshold is chosen on the validation split (Youden's J)
and saved with the model. An interrupted run resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from pneumoflow.core.atomic import atomic_path
from pneumoflow.core.diskrows import DiskRows, save_rows
from pneumoflow.formats import arrays
from pneumoflow.models import classifiers, thresholds, torchdata
from pneumoflow.tracking.model_run import ModelRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierConfig:
    """One classifier's training settings (config `models.<name>`)."""

    name: str
    img_size: int = 224
    weights: str | None = None
    epochs: int = 30
    batch_size: int = 16
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.01
    step_size: int = 10
    gamma: float = 0.1
    hflip: bool = False
    rotate_degrees: float = 0.0
    scale: float = 0.0
    seed: int = 42
    amp: bool = False
    cache_features: bool | str = "auto"

    @classmethod
    def from_config(cls, name: str, section: dict) -> ClassifierConfig:
        """From config `models.<name>`: `augment` flattened; job resources and the switch left out."""
        values = {k: v for k, v in section.items() if k not in ("enabled", "augment", "gpus", "threads")}
        return cls(name=name, **values, **section.get("augment", {}))

    def on(self, device: torch.device) -> ClassifierConfig:
        """The settings as they take effect on `device`: amp only on a GPU. On the CPU, bf16
        autocast would change the numbers (the schema says amp is ignored there), and a run with
        amp: true must be the same run, fingerprint included, as one with amp: false."""
        return dataclasses.replace(self, amp=self.amp and device.type == "cuda")


def training_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_split(npz_paths: list[str | Path], name: str) -> tuple[DiskRows, np.ndarray]:
    """(images: N rows of (S, S) uint8, read from the .npz files as needed; labels (N,) uint8)
    of one split; clear error when empty. Memory: the labels, not the images."""
    labels = arrays.load_arrays(npz_paths, keys=("labels",))["labels"]
    if len(labels) == 0:
        raise ValueError(f"the {name} split has no images; add data or change split fractions")
    return DiskRows([(path, "images") for path in npz_paths]), labels


def images_to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, 1, S, S) uint8 batch -> the network's (B, 3, S, S) float32 input on `device`."""
    return torchdata.to_model_input(images.to(device)).contiguous(memory_format=torch.channels_last)


def features_to_input(features: torch.Tensor, device: torch.device) -> torch.Tensor:
    return features.to(device)


def uses_feature_cache(cfg: ClassifierConfig) -> bool:
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


def _loaders(cfg: ClassifierConfig, train, val, threads: int) -> tuple[DataLoader, DataLoader]:
    transform = torchdata.augmentation(cfg.hflip, cfg.rotate_degrees, cfg.scale)
    workers = max(threads - 1, 0)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(
        torchdata.ArrayDataset(*train, transform),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=workers,
    )
    val_loader = DataLoader(torchdata.ArrayDataset(*val), batch_size=cfg.batch_size, num_workers=workers)
    return train_loader, val_loader


def _feature_loaders(
    cfg: ClassifierConfig, backbone, train, val, device, files: tuple[Path, Path]
) -> tuple[DataLoader, DataLoader]:
    """Loaders of cached backbone features (kept in `files`), batched and shuffled exactly as
    _loaders batches images."""
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
    """Train, keep the best-val-accuracy weights (ties: lower val loss) at `model_out`; return
    (history table, val probabilities (N,) float32 of the kept weights).

    model_out holds {"arch", "head", "img_size", "threshold", "state_dict"} (see save_model).
    A checkpoint {model, optimizer, lr_scheduler, epoch, history, best, fingerprint} and the
    best weights so far are written after the first and the last epoch, and in between as
    CheckpointPacer allows; a later call with the same fingerprint resumes at epoch + 1.
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
    history, best, start = [], (-1.0, -np.inf), 0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["lr_scheduler"])
            history, best, start = state["history"], tuple(state["best"]), state["epoch"] + 1
            log.info("resuming from %s at epoch %d of %d", checkpoint, start + 1, cfg.epochs)
            for row in history:  # the new run gets the earlier epochs too
                run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        else:
            log.info("ignoring checkpoint %s: it belongs to other settings or data", checkpoint)
    backbone, head = classifiers.split_backbone(cfg.name, model)
    feature_files = tuple(
        checkpoint.with_name(f"features-{s}-{checkpoint.stem}.npy") for s in ("train", "val")
    )
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    try:
        if uses_feature_cache(cfg):
            net, prepare = head, features_to_input
            train_loader, val_loader = _feature_loaders(cfg, backbone, train, val, device, feature_files)
            train_features = train_loader.dataset.rows
        else:
            net, prepare = model, images_to_input
            train_loader, val_loader = _loaders(cfg, train, val, threads)
            train_features = None
        for _ in range(start):  # a resumed run draws the batch orders the first run would have
            list(train_loader.sampler)
        if kind == classifiers.PROBE_HEAD and start == 0:
            if train_features is None:
                batches = backbone_batches(backbone, train[0], device, cfg.batch_size)
            else:
                batches = (train_features[i] for i in range(len(train_features)))
                batches = (np.asarray(row)[None] for row in batches)
            fit_standardize(model, batches)
        saver, best_state = CheckpointPacer(), None  # best_state: best weights not yet on disk
        for epoch in range(start, cfg.epochs):
            started = time.perf_counter()
            train_loss, train_acc = train_one_epoch(
                net, train_loader, criterion, optimizer, device, scaler, cfg, prepare
            )
            val_loss, val_acc, _ = evaluate(net, val_loader, criterion, device, prepare)
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
            history.append(row)
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            log.info(
                "epoch %d/%d %s",
                epoch + 1,
                cfg.epochs,
                {k: round(v, 4) for k, v in row.items() if k != "epoch"},
            )
            if (val_acc, -val_loss) > best:
                best, best_state = (val_acc, -val_loss), _copied(changing_state(model))
            if epoch == cfg.epochs - 1 or saver.due():
                with saver.writing():
                    if best_state is not None:
                        with atomic_path(best_weights(checkpoint)) as tmp:
                            torch.save(best_state, tmp)
                        best_state = None
                    with atomic_path(checkpoint) as tmp:
                        torch.save(
                            {
                                "model": changing_state(model),
                                "optimizer": optimizer.state_dict(),
                                "lr_scheduler": scheduler.state_dict(),
                                "epoch": epoch,
                                "history": history,
                                "best": list(best),
                                "fingerprint": fingerprint,
                                "config": dataclasses.asdict(cfg),
                            },
                            tmp,
                        )
        # the best weights live beside the checkpoint, so a job killed after its last epoch
        # (its outputs deleted by Snakemake) still has them on the rerun
        model.load_state_dict(
            torch.load(best_weights(checkpoint), map_location="cpu", weights_only=True), strict=False
        )
        _, _, val_probs = evaluate(net, val_loader, criterion, device, prepare)
    finally:  # the feature cache is only good for this job
        for path in feature_files:
            path.unlink(missing_ok=True)
    threshold = thresholds.youden_threshold(val[1], val_probs)
    save_model(model_out, model.cpu(), cfg, kind, threshold)
    return pd.DataFrame(history), val_probs


def save_model(path: Path, model: nn.Module, cfg: ClassifierConfig, kind: str, threshold: float) -> None:
    """model.pt: the state dict with what inference needs to rebuild and use it (loads with
    torch.load(weights_only=True); classifier_inference.load_classifier reads it)."""
    with atomic_path(path) as tmp:
        torch.save(
            {
                "arch": cfg.name,
                "head": kind,
                "img_size": cfg.img_size,
                "threshold": threshold,
                "threshold_rule": thresholds.RULE,
                "description": describe_head(cfg, kind),
                "state_dict": model.state_dict(),
            },
            tmp,
        )


class CheckpointPacer:
    """Says when the next checkpoint is due: once the epochs since the last one took at least
    WORK_PER_WRITE times as long as writing it. Writing costs then at most 1/WORK_PER_WRITE of
    the training time, and a killed job loses at most about WORK_PER_WRITE writes' worth of
    epochs. Small heads (ResNet101's 1 MB) are saved after every epoch; VGG16's fc6-fc8 with
    momentum (956 MB at 224 px, ~1.5 s a write) every ~15 s of training, not every 2 s epoch.
    """

    WORK_PER_WRITE = 10

    def __init__(self) -> None:
        self.last_write = 0.0  # seconds the last write took: the first epoch writes at once
        self.since = time.perf_counter()

    def due(self) -> bool:
        return time.perf_counter() - self.since >= self.WORK_PER_WRITE * self.last_write

    @contextlib.contextmanager
    def writing(self):
        started = time.perf_counter()
        yield
        self.since = time.perf_counter()
        self.last_write = self.since - started


def _copied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: tensor.clone() for key, tensor in state.items()}


def describe_head(cfg: ClassifierConfig, kind: str) -> str:
    """One line saying what was trained, for the log, MLflow and the report."""
    if kind == classifiers.PROBE_HEAD:
        return PROBE_NOTE.format(name=cfg.name)
    return f"seed recipe: {cfg.weights} weights, backbone frozen, the seed's head trained with SGD"


def changing_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What training changes: every tensor except those of wholly frozen modules (the backbone
    comes back from the weights file, or from the seeded random init). Keeps checkpoints small:
    about 1 MB instead of 170 MB for ResNet101; keeps the probe's Standardize buffers."""
    keep = {}
    for prefix, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        if params and not any(p.requires_grad for p in params):
            continue
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for key, tensor in tensors:
            if isinstance(tensor, nn.Parameter) and not tensor.requires_grad:
                continue
            keep[f"{prefix}.{key}" if prefix else key] = tensor.detach()
    return keep


def best_weights(checkpoint: Path) -> Path:
    """Where fit keeps the best-val-accuracy state dict while training: beside the checkpoint."""
    return checkpoint.with_name(f"best-{checkpoint.name}")


PROBE_NOTE = (
    "no pretrained weights (weights: null): linear probe on the frozen random-init backbone's pooled "
    "features, trained with Adam; the seed study fine-tuned a head on ImageNet features with SGD "
    "(set models.{name}.weights: imagenet for that)"
)
