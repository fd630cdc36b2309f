"""The Model Registry's side of the run cache: where a run's one model file is, and alias `current`.

Every model the pipeline logs (pneumoflow.tracking.model_files) is registered as `pneumoflow-<model>`;
alias `current` points at the version that the last pipeline run trained or restored, the one
in results/models. No model code here: every tracked stage reaches this module.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

ALIAS = "current"  # the version the last pipeline run trained or restored


def registered_name(model: str) -> str:
    return f"pneumoflow-{model}"


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
    import mlflow

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
