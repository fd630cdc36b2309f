"""Trained models in MLflow: logged once, registered, and read back by the run cache and predict.

Each model is logged as an MLflow pyfunc model whose one artifact is the pipeline's own model
file (`model.pt` for the classifiers, `model.keras` for the U-Net): that copy is the only one in
the store. The run cache restores the file from it; `pneumoflow predict` and
`mlflow.pyfunc.load_model` both load it. Every logged model is registered as
`pneumoflow-<model>` (pneumoflow.tracking.registry).

The pyfunc interface: images (B, S, S) uint8, as the `arrays` stage writes them ->
classifiers: pneumonia probability (B,) float32 (pneumoflow.tracking.classifier_pyfunc); U-Net: opacity
probability (B, S, S) float32 (pneumoflow.tracking.unet_pyfunc). One module each, so that neither
trainer's code closure reaches the other's framework.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from pneumoflow.tracking import run_cache
from pneumoflow.tracking.model_run import UNET_RUN_TAG, quick_requests
from pneumoflow.tracking.registry import ALIAS, registered_name

log = logging.getLogger(__name__)

ARTIFACT = "model_file"  # the pyfunc artifact key of the model file
MODEL_FILES = {"unet": "model.keras"}  # others: model.pt


def log_model(
    run_id: str,
    model: str,
    model_file: str | Path,
    python_model: mlflow.pyfunc.PythonModel,
    img_size: int,
    requirements: list[str],
) -> str:
    """Log `model_file` as the run's MLflow model, served by `python_model` (which reads the
    file from its artifact ARTIFACT), with a signature and an input example at `img_size`;
    register it as pneumoflow-<model> and point alias `current` at the new version.

    Returns the version. `requirements`: pinned pip requirements (skips MLflow's slow inference).
    """
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


def download_registered(uri: str, dest: str | Path, tracking_uri: str) -> Path:
    """A models:/pneumoflow-<model>@<alias> (or /<version>) URI in the registry at `tracking_uri`
    -> dest/<model>/<model file>, the layout `pneumoflow predict --models` reads. Returns dest.
    For the U-Net, also dest/unet/postprocess.json, the box settings tuned for that version."""
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
    if model == "unet":
        unet_run = mlflow.models.Model.load(str(local)).run_id
        _download_tuned_postprocess(mlflow.MlflowClient(tracking_uri), uri, unet_run, Path(dest) / model)
    return Path(dest)


def _download_tuned_postprocess(client, uri: str, unet_run: str | None, folder: Path) -> None:
    """postprocess.json from the newest finished postprocess run (in any experiment) that tuned
    the boxes of the U-Net trained in `unet_run`, into `folder`. Where there is none, or the
    store cannot give it, it warns and predict uses its default settings."""
    try:
        if not unet_run:
            raise FileNotFoundError("its MLmodel names no training run")
        with quick_requests():
            experiments = [e.experiment_id for e in client.search_experiments()]
            tuned = run_cache.newest_finished_run(client, experiments, UNET_RUN_TAG, unet_run)
            if tuned is None:
                raise FileNotFoundError(f"no finished postprocess run is tagged {UNET_RUN_TAG}={unet_run}")
            settings = {"postprocess.json": folder / "postprocess.json"}
            run_cache.restore_outputs(client, tuned.info.run_id, settings)
    except (MlflowException, OSError) as exc:
        log.warning("%s: no tuned box settings (rule postprocess), so the default ones: %s", uri, exc)
        return
    log.info("box settings of %s: postprocess.json of run %s", uri, tuned.info.run_id)
