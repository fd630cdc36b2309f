"""The trained U-Net as an MLflow pyfunc model (logged by pneumoflow.tracking.model_files)."""

from __future__ import annotations

import mlflow
import numpy as np

from pneumoflow.tracking.model_files import ARTIFACT


class UnetModel(mlflow.pyfunc.PythonModel):
    """The U-Net: images (B, S, S) uint8 -> opacity probabilities (B, S, S) float32."""

    def __getstate__(self) -> dict:  # pickled into the MLflow model without its loaded weights
        return {}

    def load_context(self, context) -> None:
        from pneumoflow.models.unet_saved import load_unet

        self.model = load_unet(context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params=None):
        from pneumoflow.models.unet_saved import unet_probs

        return unet_probs(self.model, np.asarray(model_input, dtype=np.uint8))
