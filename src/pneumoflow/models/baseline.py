"""The reference classifier every run trains beside the deep models: logistic regression on
the images shrunk to a few pixels (scikit-learn). A deep model that does not beat it on the
test split is flagged in the report.

The fitted model is stored as plain numbers in a JSON file (no pickle):
{"pixels", "img_size", "mean", "scale", "coef", "intercept", "C", "threshold", "threshold_rule"}.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pneumoflow.core import schema

log = logging.getLogger(__name__)


_DEFAULTS = schema.defaults("models.baseline")  # every default from the schema


@dataclass(frozen=True)
class BaselineConfig:
    """Config `models.baseline`."""

    img_size: int = _DEFAULTS["img_size"]
    pixels: int = _DEFAULTS["pixels"]
    C: float = _DEFAULTS["C"]  # noqa: N815 (scikit-learn's name)

    @classmethod
    def from_config(cls, section: dict) -> BaselineConfig:
        return cls(**{k: v for k, v in section.items() if k not in schema.JOB_KEYS})


def downsample(images: np.ndarray, pixels: int) -> np.ndarray:
    """(N, S, S) uint8 -> (N, pixels * pixels) float32 in [0, 1] (area interpolation)."""
    small = [cv2.resize(image, (pixels, pixels), interpolation=cv2.INTER_AREA) for image in images]
    return np.stack(small).reshape(len(images), -1).astype(np.float32) / 255.0


def fit(train_images: np.ndarray, train_labels: np.ndarray, cfg: BaselineConfig) -> dict:
    """Standardize + L2 logistic regression on the downsampled train split; the model as numbers."""
    from sklearn.linear_model import LogisticRegression

    x = downsample(train_images, cfg.pixels)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=cfg.C, max_iter=5000).fit((x - mean) / scale, train_labels.astype(int))
    return {
        "pixels": cfg.pixels,
        "img_size": cfg.img_size,
        "C": cfg.C,
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": clf.coef_[0].tolist(),
        "intercept": float(clf.intercept_[0]),
    }


def probabilities(model: dict, images: np.ndarray) -> np.ndarray:
    """Pneumonia probabilities (N,) float32 of (N, S, S) uint8 images."""
    x = (downsample(images, model["pixels"]) - np.asarray(model["mean"])) / np.asarray(model["scale"])
    logits = x @ np.asarray(model["coef"]) + model["intercept"]
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
