"""Trained models in MLflow: logged once, registered, and read back by the run cache and predict.

Each model is logged as an MLflow pyfunc model whose one artifact is the pipeline's own model
file (`model.pt` for the classifiers, `model.keras` for the U-Net): that copy is the only one in
the store. The run cache restores the file from it; `pneumoflow predict` and
`mlflow.pyfunc.load_model` both load it. Every logged model is registered as
`pneumoflow-<model>`, and alias `current` points at the version that the last pipeline run
trained or restored (the one in results/models).

The pyfunc interface: images (B, S, S) uint8, as the `arrays` stage writes them ->
classifiers: pneumonia probability (B,) float32; U-Net: opacity probability (B, S, S) float32.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np

log = logging.getLogger(__name__)

ALIAS = "current"  # the version the last pipeline run trained or restored
ARTIFACT = "model_file"  # the pyfunc artifact key of the model file
MODEL_FILES = {"unet": "model.keras"}  # others: model.pt


def registered_name(model: str) -> str:
    return f"pneumoflow-{model}"


class ClassifierModel(mlflow.pyfunc.PythonModel):
    """A pneumoflow classifier: images (B, S, S) uint8 -> pneumonia probabilities (B,) float32."""

    def __init__(self, name: str):
        self.name = name

    def __getstate__(self) -> dict:  # pickled into the MLflow model without its loaded weights
        return {"name": self.name}

    def load_context(self, context) -> None:
        from pneumoflow.classifier_inference import load_classifier

        self.model, self.saved = load_classifier(self.name, context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params=None):
        from pneumoflow.classifier_inference import classifier_probs

        return classifier_probs(self.model, np.asarray(model_input, dtype=np.uint8))


class UnetModel(mlflow.pyfunc.PythonModel):
    """The U-Net: images (B, S, S) uint8 -> opacity probabilities (B, S, S) float32."""

    def __getstate__(self) -> dict:  # pickled into the MLflow model without its loaded weights
        return {}

    def load_context(self, context) -> None:
        from pneumoflow.unet_inference import load_unet

        self.model = load_unet(context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params=None):
        from pneumoflow.unet_inference import unet_probs

        return unet_probs(self.model, np.asarray(model_input, dtype=np.uint8))


def log_model(run_id: str, model: str, model_file: str | Path, img_size: int, requirements: list[str]) -> str:
    """Log `model_file` as the run's MLflow model (signature and input example at `img_size`),
    register it as pneumoflow-<model> and point alias `current` at the new version.

    Returns the version. `requirements`: pinned pip requirements (skips MLflow's slow inference).
    """
    python_model = UnetModel() if model == "unet" else ClassifierModel(model)
    example = np.zeros((1, img_size, img_size), np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        # the pyfunc's artifact keeps the file's name: the run cache restores it by that name
        staged = Path(tmp) / Path(model_file).name
        shutil.copyfile(model_file, staged)
        python_model.load_context(_Context({ARTIFACT: str(staged)}))
        signature = mlflow.models.infer_signature(example, python_model.predict(None, example))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=python_model,
                artifacts={ARTIFACT: str(staged)},
                signature=signature,
                input_example=example,
                pip_requirements=requirements,
                registered_model_name=registered_name(model),
            )
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(registered_name(model), ALIAS, version)
    log.info("registered %s version %s (@%s)", registered_name(model), version, ALIAS)
    return version


class _Context:
    """What load_context reads of MLflow's PythonModelContext."""

    def __init__(self, artifacts: dict[str, str]):
        self.artifacts = artifacts


def _run_model(client, run_id: str):
    """The newest model the run logged (MLflow 3 keeps models beside runs), or None."""
    run = client.get_run(run_id)
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        max_results=1,
    )
    return found[0] if found else None


def restore_model_file(client, run_id: str, dest: str | Path) -> None:
    """Copy the model file that run `run_id` logged onto `dest` (its one copy in the store).

    Raises FileNotFoundError when the run logged no model or its files are gone.
    """
    model = _run_model(client, run_id)
    if model is None:
        raise FileNotFoundError(f"run {run_id} logged no model")
    name = Path(dest).name
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"{model.artifact_location.rstrip('/')}/artifacts/{name}"
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)


def point_alias(client, model: str, run_id: str) -> None:
    """Move alias `current` of pneumoflow-<model> to the version that run `run_id` registered."""
    versions = client.search_model_versions(f"name = '{registered_name(model)}' and run_id = '{run_id}'")
    if versions:
        newest = max(versions, key=lambda v: int(v.version))
        client.set_registered_model_alias(registered_name(model), ALIAS, newest.version)


def download_registered(uri: str, dest: str | Path, tracking_uri: str) -> Path:
    """A models:/pneumoflow-<model>@<alias> (or /<version>) URI in the registry at `tracking_uri`
    -> dest/<model>/<model file>, the layout `pneumoflow predict --models` reads. Returns dest."""
    name = uri.removeprefix("models:/").split("@")[0].split("/")[0]
    model = name.removeprefix("pneumoflow-")
    if not name.startswith("pneumoflow-") or not model:
        raise ValueError(
            f"{uri}: expected models:/pneumoflow-<model>@<alias>, e.g. models:/pneumoflow-vgg16@{ALIAS}"
        )
    mlflow.set_tracking_uri(tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(Path(dest) / "download")))
    file = MODEL_FILES.get(model, "model.pt")
    found = local / "artifacts" / file
    if not found.is_file():
        raise FileNotFoundError(f"{uri} holds no {file}: not a model the pneumoflow pipeline logged")
    (Path(dest) / model).mkdir(parents=True, exist_ok=True)
    shutil.move(found, Path(dest) / model / file)
    return Path(dest)
