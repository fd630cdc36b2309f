"""Any image classifier of a run (VGG16, ResNet101, the pixel baseline) as one function:
images -> pneumonia probabilities. Used by evaluate and by the submission's gate; the
trainers do not reach it, so an edit here retrains nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def load_scorer(name: str, path: str | Path) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """(images (N, S, S) uint8 -> pneumonia probabilities (N,) float32, what was saved with the
    model: img_size, threshold, threshold_rule, description) for a classifier or the baseline."""
    if name == "baseline":
        from pneumoflow.models import baseline

        model = baseline.load(path)
        return (lambda images: baseline.probabilities(model, images)), model
    from pneumoflow.models.classifier_inference import classifier_probs, load_classifier

    model, saved = load_classifier(name, path)
    return (lambda images: classifier_probs(model, images)), saved
