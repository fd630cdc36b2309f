"""A saved U-Net: load it and run it (no training, no evaluation code).

Apart from unet_inference so that the U-Net's MLflow pyfunc, which train_unet logs, reaches
no metrics or post-processing code (a change there would otherwise retrain the U-Net), and
apart from unet.py so that evaluate does not reach the model builder.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np


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
