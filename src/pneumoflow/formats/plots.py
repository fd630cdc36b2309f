"""Learning-curve figures (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pneumoflow.core.atomic import atomic_path  # noqa: E402


def plot_curves(history: pd.DataFrame, metrics: list[str], path: str | Path, title: str) -> None:
    """One panel per metric, train vs val per epoch, from columns train_<m> and val_<m>."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for phase, style in (("train", "-o"), ("val", "-s")):
            ax.plot(history["epoch"] + 1, history[f"{phase}_{metric}"], style, label=phase, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def plot_roc(curves: dict[str, tuple], path: str | Path) -> None:
    """ROC curves on one plot: {name: (fpr, tpr, auc)}."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for name, (fpr, tpr, auc) in curves.items():
        if len(fpr):
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_confusion(matrix: list[list[int]], path: str | Path, title: str) -> None:
    """2x2 confusion matrix [[TN, FP], [FN, TP]] with counts."""
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(matrix, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=14)
    ax.set_xticks([0, 1], ["normal", "pneumonia"])
    ax.set_yticks([0, 1], ["normal", "pneumonia"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    _save(fig, path)


def plot_samples(images, labels, predicted, path: str | Path, n: int = 8) -> None:
    """Grid of test images titled predicted vs true label (as the seed study shows)."""
    names = ("normal", "pneumonia")
    count = min(n, len(images))
    fig, axes = plt.subplots(1, max(count, 1), figsize=(2.2 * max(count, 1), 2.6), squeeze=False)
    for ax, i in zip(axes[0], range(count), strict=False):
        ax.imshow(images[i], cmap="gray")
        ok = bool(predicted[i]) == bool(labels[i])
        ax.set_title(
            f"pred {names[int(predicted[i])]}\ntrue {names[int(labels[i])]}",
            fontsize=8,
            color="green" if ok else "red",
        )
        ax.axis("off")
    _save(fig, path)


def plot_overlays(images, masks, predicted, path: str | Path, n: int = 8) -> None:
    """Test images with the true mask (green) and the predicted mask (red) outlined."""
    order = sorted(range(len(images)), key=lambda i: -int(masks[i].any()))[:n]
    fig, axes = plt.subplots(1, max(len(order), 1), figsize=(2.2 * max(len(order), 1), 2.4), squeeze=False)
    for ax, i in zip(axes[0], order, strict=False):
        ax.imshow(images[i], cmap="gray")
        for mask, colour in ((masks[i], "lime"), (predicted[i], "red")):
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1)
        ax.axis("off")
    _save(fig, path)
