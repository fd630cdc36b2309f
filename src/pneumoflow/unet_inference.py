"""The trained U-Net -> opacity maps and boxes (evaluate, predict and submission share it).

Images come in as the arrays stage makes them: (N, S, S) uint8 grayscale.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from pneumoflow import metrics
from pneumoflow.images import Source


def load_unet(path: str | Path) -> keras.Model:
    """The saved Keras U-Net (no optimizer state)."""
    return keras.models.load_model(path, compile=False)


def input_size(model: keras.Model) -> int:
    """S of the (None, S, S, 1) input the U-Net was trained at."""
    return int(model.input_shape[1])


def unet_probs(model: keras.Model, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Opacity probabilities (N, S, S) float32 for images (N, S, S) uint8."""
    x = images[..., None].astype("float32") / 255.0
    return model.predict(x, batch_size=batch_size, verbose=0)[..., 1]


def predict_sources(
    model: keras.Model, sources: list[Source], threshold: float
) -> tuple[np.ndarray, list[list[metrics.ScoredBox]]]:
    """((N, S, S) float32 opacity maps, each image's scored boxes in its own pixels) for input
    images prepared exactly as the arrays stage prepares them."""
    size = input_size(model)
    probs = unet_probs(model, np.stack([source.resized(size) for source in sources]))
    boxes = [
        metrics.boxes_in_frame(p, threshold, *source.shape) for p, source in zip(probs, sources, strict=True)
    ]
    return probs, boxes
