"""Saving and resuming a classifier's training.

A checkpoint {model, optimizer, lr_scheduler, epoch, history, best, fingerprint, config}
holds what training changes (changing_state: about 1 MB for ResNet101's head, not its
170 MB backbone); the best weights so far live beside it (best_weights), so a job killed
after its last epoch still has them on the rerun. Writes are paced (CheckpointPacer).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pneumoflow.core.atomic import atomic_path

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where training stands: one history row per finished epoch, the best (val_acc, -val_loss)
    so far, and the next epoch to run."""

    history: list[dict] = field(default_factory=list)
    best: tuple[float, float] = (-1.0, float("-inf"))
    start: int = 0


def resume(checkpoint: Path, fingerprint: str, model: nn.Module, optimizer, scheduler) -> Progress:
    """Load `checkpoint` into model, optimizer and scheduler when it carries `fingerprint` (same
    settings, data and code); a fresh Progress otherwise."""
    if not checkpoint.exists():
        return Progress()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        log.info("ignoring checkpoint %s: it belongs to other settings or data", checkpoint)
        return Progress()
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["lr_scheduler"])
    return Progress(state["history"], tuple(state["best"]), state["epoch"] + 1)


def save(
    checkpoint: Path,
    model: nn.Module,
    optimizer,
    scheduler,
    progress: Progress,
    *,
    fingerprint: str,
    config: dict,
    unsaved_best: dict[str, torch.Tensor] | None,
) -> None:
    """Write the best weights not yet on disk (if any), then the checkpoint of the last epoch."""
    if unsaved_best is not None:
        with atomic_path(best_weights(checkpoint)) as tmp:
            torch.save(unsaved_best, tmp)
    with atomic_path(checkpoint) as tmp:
        torch.save(
            {
                "model": changing_state(model),
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict(),
                "epoch": progress.history[-1]["epoch"],
                "history": progress.history,
                "best": list(progress.best),
                "fingerprint": fingerprint,
                "config": config,
            },
            tmp,
        )


def load_best(checkpoint: Path, model: nn.Module) -> None:
    """Put the best weights kept beside `checkpoint` back into `model`."""
    model.load_state_dict(
        torch.load(best_weights(checkpoint), map_location="cpu", weights_only=True), strict=False
    )


def best_weights(checkpoint: Path) -> Path:
    """Where fit keeps the best-val-accuracy state dict while training: beside the checkpoint."""
    return checkpoint.with_name(f"best-{checkpoint.name}")


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


def copied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: tensor.clone() for key, tensor in state.items()}


class CheckpointPacer:
    """Says when the next checkpoint is due: once the epochs since the last one took at least
    WORK_PER_WRITE times as long as writing it. Writing costs then at most 1/WORK_PER_WRITE of
    the training time, and a killed job loses at most about WORK_PER_WRITE writes' worth of
    epochs. Before the first write its cost is estimated from the checkpoint's size at
    WRITE_BYTES_PER_S, so a short first epoch does not pay for a large write either. A cheap
    write (under FREE_WRITE_S) is also due after the first and the last epoch, so a small head
    (ResNet101's 2 MB with momentum, the probe's) loses nothing to a kill after either. VGG16's
    fc6-fc8 with momentum (956 MB at 224 px, 1.5-2.4 s a write) is written every ~15-24 s of
    training, not every 2 s epoch, and not at the end of a shorter run.
    """

    WORK_PER_WRITE = 10
    # torch.save of VGG16's 956 MB checkpoint to local disk took 2.35 s on the 2-core
    # development machine (py-spy of bench_cache_features.py, 2026-11-28), 1.5 s on another
    WRITE_BYTES_PER_S = 400e6
    FREE_WRITE_S = 0.05

    def __init__(self) -> None:
        self.last_write: float | None = None  # seconds the last write took
        self.since = time.perf_counter()

    def due(self, checkpoint_bytes: int, *, last_epoch: bool = False) -> bool:
        """Whether to write now a checkpoint of about `checkpoint_bytes` (state_bytes)."""
        measured = self.last_write
        cost = checkpoint_bytes / self.WRITE_BYTES_PER_S if measured is None else measured
        if cost < self.FREE_WRITE_S and (measured is None or last_epoch):
            return True
        return time.perf_counter() - self.since >= self.WORK_PER_WRITE * cost

    @contextlib.contextmanager
    def writing(self):
        started = time.perf_counter()
        yield
        self.since = time.perf_counter()
        self.last_write = self.since - started


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors a checkpoint holds: what training changes and the optimizer's state."""
    tensors = [*changing_state(model).values()]
    tensors += [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    return sum(t.nbytes for t in tensors)
