"""Learning-curve figures (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pneumoflow.atomic import atomic_path  # noqa: E402


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
