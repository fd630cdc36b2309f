"""A trained classifier -> pneumonia probabilities (evaluate and predict share it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pneumoflow import classifiers, torchdata


def load_classifier(name: str, path: str | Path) -> torch.nn.Module:
    """A classifier from its saved state dict, in eval mode on the CPU (weights_only: no pickles)."""
    model, _ = classifiers.build_classifier(name, None)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def classifier_probs(model: torch.nn.Module, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Pneumonia probabilities (N,) float32 for images (N, S, S) uint8, preprocessed as in training."""
    probs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).unsqueeze(1)
            probs.append(model(torchdata.to_model_input(batch)).softmax(1)[:, 1].numpy())
    return np.concatenate(probs) if probs else np.zeros(0, np.float32)
