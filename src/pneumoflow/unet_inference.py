"""The trained U-Net -> opacity maps and boxes (evaluate, predict and submission share it).

Images come in as the arrays stage makes them: (N, S, S) uint8 grayscale.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from pneumoflow import metrics, postprocess
from pneumoflow.images import Source
from pneumoflow.postprocess import PostProcess


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
    model: keras.Model, sources: list[Source], pp: PostProcess, gate_probs: np.ndarray | None = None
) -> tuple[np.ndarray, list[list[metrics.ScoredBox]]]:
    """((N, S, S) float32 opacity maps, each image's post-processed scored boxes in its own
    pixels) for input images prepared exactly as the arrays stage prepares them; `gate_probs`
    (N,): the gate classifier's probabilities when pp has a gate."""
    size = input_size(model)
    probs = unet_probs(model, np.stack([source.resized(size) for source in sources]))
    gates = [None] * len(sources) if gate_probs is None or pp.gate is None else [float(g) for g in gate_probs]
    boxes = [
        postprocess.boxes(p, *source.shape, pp, gate)
        for p, source, gate in zip(probs, sources, gates, strict=True)
    ]
    return probs, boxes
