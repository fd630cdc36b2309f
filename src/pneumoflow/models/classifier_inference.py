"""A trained classifier -> pneumonia probabilities (evaluate and predict share it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pneumoflow.models import classifiers, torchdata


def load_classifier(name: str, path: str | Path) -> tuple[torch.nn.Module, dict]:
    """(the classifier in eval mode on the CPU, what was saved with it: head, img_size,
    normalization, threshold, threshold_rule) from a model.pt that training.classifier.save_model
    wrote (weights_only: no pickles)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ValueError(f"{path} is not a pneumoflow classifier (model.pt of train_{name}); retrain it")
    if saved["arch"] != name:
        raise ValueError(f"{path} holds a {saved['arch']} classifier, not {name}")
    # files saved before the key existed were all trained on this normalization
    normalization = saved.get("normalization", torchdata.NORMALIZATION)
    if {
        k: tuple(v) if isinstance(v, list) else v for k, v in normalization.items()
    } != torchdata.NORMALIZATION:
        raise ValueError(
            f"{path} was trained on inputs normalized as {normalization}, but this pneumoflow feeds "
            f"{torchdata.NORMALIZATION}; use the pneumoflow version that trained it, or retrain"
        )
    # built on the meta device: no random init (2 s for VGG16), every tensor comes from the file;
    # contiguous, as a copy into a built model would be (training saves channels-last weights)
    with torch.device("meta"):
        model, _ = classifiers.build_classifier(name, None, head=saved["head"])
    model.load_state_dict({k: v.contiguous() for k, v in saved["state_dict"].items()}, assign=True)
    return model.eval(), {k: v for k, v in saved.items() if k != "state_dict"}


def classifier_probs(model: torch.nn.Module, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Pneumonia probabilities (N,) float32 for images (N, S, S) uint8, preprocessed as in training."""
    probs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).unsqueeze(1)
            probs.append(model(torchdata.to_model_input(batch)).softmax(1)[:, 1].numpy())
    return np.concatenate(probs) if probs else np.zeros(0, np.float32)
