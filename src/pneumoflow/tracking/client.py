"""The MLflow client: connect to the store, find or create the experiment, open and close the
pipeline's parent run.

One experiment, marked as model training, with a saved UI view comparing the models
(tracking.ui); one top-level run per model per training, named after the model and
tagged with the run of the `snakemake` invocation that made it (not nested: the UI shows
nested runs as one collapsed row without metrics). One run's logging is tracking.model_run;
the run cache, tracking.run_cache; the logged models, tracking.model_files and
tracking.registry."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from pneumoflow.tracking.model_run import (
    PARENT_ENV,
    TrackingUnavailableError,
    quick_requests,
)
from pneumoflow.tracking.settings import TrackingSettings

log = logging.getLogger(__name__)

# MLflow's mark of a model-training (not GenAI) experiment; MLflow 3.17's UI also needs
# workflowType=machine_learning in its URL to open on the runs (see pneumoflow.tracking.ui).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def connect(settings: TrackingSettings):
    """An MlflowClient for the store, or None when unreachable and not required.

    Creates the sqlite file and its schema when missing. Raises
    TrackingUnavailableError naming the URI when the store cannot be reached.
    """
    if not settings.telemetry:
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    import mlflow
    from mlflow import MlflowClient

    uri = settings.uri
    mlflow.set_tracking_uri(uri)  # for the mlflow.<flavor>.log_model calls
    if (db := _sqlite_path(uri)) is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    try:
        _probe(client)
    except Exception as exc:
        message = (
            f"MLflow tracking store {uri} cannot be reached ({type(exc).__name__}: {str(exc)[:300]}). "
            "Start the server, or fix mlflow.tracking_uri in config (or MLFLOW_TRACKING_URI); "
            "set mlflow.required: false to go on without tracking."
        )
        if settings.required:
            raise TrackingUnavailableError(message) from exc
        log.warning("%s Going on WITHOUT tracking.", message)
        return None
    return client


def _probe(client) -> None:
    with quick_requests(retries=0):
        client.search_experiments(max_results=1)


def experiment_id(client, settings: TrackingSettings) -> str:
    """Id of the configured experiment, created if missing and marked as model training.

    With an sqlite store the artifacts go beside it, under mlartifacts/: a relative path
    when the store's path is relative (the default, results/), so that moving the project
    folder keeps every artifact reachable from the project root.
    """
    found = client.get_experiment_by_name(settings.experiment)
    if found is None:
        found = _create_experiment(client, settings)
    from pneumoflow.tracking import ui as mlflow_ui

    # also on experiments made before these tags, or by an older version of the view
    if "mlflow.experimentKind" not in found.tags:
        client.set_experiment_tag(found.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
    if not mlflow_ui.view_is_current(found.tags.get(mlflow_ui.VIEW_TAG)):
        client.set_experiment_tag(found.experiment_id, mlflow_ui.VIEW_TAG, mlflow_ui.comparison_view())
    return found.experiment_id


def _experiment_tags() -> dict[str, str]:
    """Model training, and the UI's saved "Model comparison" view (pneumoflow.tracking.ui)."""
    from pneumoflow.tracking import ui as mlflow_ui

    return {**EXPERIMENT_KIND, mlflow_ui.VIEW_TAG: mlflow_ui.comparison_view()}


def _create_experiment(client, settings: TrackingSettings):
    db = _sqlite_path(settings.uri)
    location = (db.parent / "mlartifacts") if db is not None else None
    try:
        exp_id = client.create_experiment(
            settings.experiment,
            artifact_location=location.resolve().as_uri() if location else None,
            tags=_experiment_tags(),
        )
    except Exception:  # another job created it first
        found = client.get_experiment_by_name(settings.experiment)
        if found is None:
            raise
        return found
    if db is not None and location is not None and not db.is_absolute():
        _set_artifact_location(db, exp_id, location.as_posix())
    return client.get_experiment(exp_id)


def _set_artifact_location(db: Path, exp_id: str, location: str) -> None:
    """Store a relative artifact location. MLflow's create_experiment makes every local path
    absolute (mlflow.utils.uri.resolve_uri_if_local), so the row is set here, once, before
    any run exists; runs and logged models derive their locations from it, relative too."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (location, int(exp_id))
        )
    conn.close()


def start_parent_run(settings: TrackingSettings, name: str, tags: Mapping[str, str]) -> str | None:
    """Open the run grouping one pipeline invocation; its id is exported to jobs via PARENT_ENV.

    Called from the Snakefile's onstart, it also creates the store's schema and the
    experiment once, before jobs log in parallel (a fresh sqlite db otherwise races).
    """
    client = connect(settings)
    if client is None:
        return None
    run = client.create_run(experiment_id(client, settings), run_name=name, tags=dict(tags))
    os.environ[PARENT_ENV] = run.info.run_id
    return run.info.run_id


def end_parent_run(settings: TrackingSettings, run_id: str | None, ok: bool) -> None:
    if run_id and (client := connect(settings)) is not None:
        client.set_terminated(run_id, "FINISHED" if ok else "FAILED")
