"""The trained U-Net -> opacity maps and boxes (evaluate, predict and submission share it).

Images come in as the arrays stage makes them: (N, S, S) uint8 grayscale.
"""

from __future__ import annotations

import keras
import numpy as np

from pneumoflow.formats.images import Source
from pneumoflow.models import metrics
from pneumoflow.models import postprocessing as postprocess
from pneumoflow.models.postprocessing import PostProcess
from pneumoflow.models.unet_saved import input_size, load_unet, unet_probs  # noqa: F401  (callers import them here)


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
