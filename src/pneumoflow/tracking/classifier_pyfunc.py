"""A trained classifier as an MLflow pyfunc model (logged by pneumoflow.tracking.model_files)."""

from __future__ import annotations

import mlflow
import numpy as np

from pneumoflow.tracking.model_files import ARTIFACT


class ClassifierModel(mlflow.pyfunc.PythonModel):
    """A pneumoflow classifier: images (B, S, S) uint8 -> pneumonia probabilities (B,) float32."""

    def __init__(self, name: str):
        self.name = name

    def __getstate__(self) -> dict:  # pickled into the MLflow model without its loaded weights
        return {"name": self.name}

    def load_context(self, context) -> None:
        from pneumoflow.models.classifier_inference import load_classifier

        self.model, self.saved = load_classifier(self.name, context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params=None):
        from pneumoflow.models.classifier_inference import classifier_probs

        return classifier_probs(self.model, np.asarray(model_input, dtype=np.uint8))
