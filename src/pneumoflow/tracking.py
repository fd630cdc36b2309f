"""MLflow tracking shared by every training and evaluation stage.

One experiment, marked as model training, with a saved UI view comparing the models
(pneumoflow.mlflow_ui); one top-level run per model per training, named after the model
and tagged with the run of the `snakemake` invocation that made it (not nested: the UI
shows nested runs as one collapsed row without metrics); a run cache keyed by a
fingerprint of (stage config, input data, stage code closure, library versions) so
finished work is restored instead of redone. The resume checkpoints carry the same
fingerprint. The model itself is stored once, as the run's logged model
(pneumoflow.mlflow_models, pneumoflow.registry); one run's logging is pneumoflow.modelrun."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from pneumoflow.modelrun import (
    OUTPUTS,
    PARENT_ENV,
    ModelRun,
    TrackingUnavailableError,
    quick_requests,
)
from pneumoflow.modelrun import PIPELINE_TAG as PIPELINE_TAG  # re-exported: tests read it here
from pneumoflow.tracking_settings import (  # re-exported: the Snakefile and scripts import them from here
    SETTINGS_ENV as SETTINGS_ENV,
)
from pneumoflow.tracking_settings import TrackingSettings as TrackingSettings
from pneumoflow.tracking_settings import export_settings as export_settings
from pneumoflow.tracking_settings import exported_section as exported_section

log = logging.getLogger(__name__)

FINGERPRINT_TAG = "pneumoflow.fingerprint"
# MLflow's mark of a model-training (not GenAI) experiment; MLflow 3.17's UI also needs
# workflowType=machine_learning in its URL to open on the runs (see pneumoflow.mlflow_ui).
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
    from pneumoflow import mlflow_ui

    # also on experiments made before these tags, or by an older version of the view
    if "mlflow.experimentKind" not in found.tags:
        client.set_experiment_tag(found.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
    if not mlflow_ui.view_is_current(found.tags.get(mlflow_ui.VIEW_TAG)):
        client.set_experiment_tag(found.experiment_id, mlflow_ui.VIEW_TAG, mlflow_ui.comparison_view())
    return found.experiment_id


def _experiment_tags() -> dict[str, str]:
    """Model training, and the UI's saved "Model comparison" view (pneumoflow.mlflow_ui)."""
    from pneumoflow import mlflow_ui

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
    if location is not None and not db.is_absolute():
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


def fingerprint(parts: Mapping) -> str:
    """sha256 of the JSON of `parts` (keys sorted): equal parts, equal fingerprint."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def hash_files(paths: Iterable[str | Path]) -> str:
    """sha256 over the names and bytes of `paths`, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def find_cached_run(client, exp_id: str, fp: str):
    """The newest FINISHED run of the experiment tagged with fingerprint `fp`, or None."""
    runs = client.search_runs(
        [exp_id],
        filter_string=f"tags.`{FINGERPRINT_TAG}` = '{fp}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def restore_outputs(client, run_id: str, outputs: Mapping[str, str | Path]) -> None:
    """Copy the run's artifacts outputs/<name> onto the paths in `outputs` ({name: path})."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(client.download_artifacts(run_id, OUTPUTS, tmp))
        missing = [name for name in outputs if not (local / name).exists()]
        if missing:
            raise FileNotFoundError(f"run {run_id} lacks cached outputs {missing}")
        for name, path in outputs.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local / name, path)


def _restored(client, run_id: str, outputs: Mapping[str, str | Path], model_output: str | None) -> bool:
    """Restore a cached run's outputs (`model_output` from its logged model); False, with a
    warning, when its artifacts are gone (e.g. results/mlartifacts deleted to free disk,
    mlflow.db kept): the caller trains."""
    try:
        restore_outputs(client, run_id, {k: v for k, v in outputs.items() if k != model_output})
        if model_output is not None:
            from pneumoflow import registry

            registry.restore_model_file(client, run_id, outputs[model_output])
    except Exception as exc:  # missing folder, missing file, unreachable artifact store
        log.warning(
            "MLflow run %s has the same fingerprint but its outputs cannot be restored "
            "(%s: %s); training anew",
            run_id, type(exc).__name__, str(exc)[:300],
        )  # fmt: skip
        return False
    return True


def log_split_inputs(run: ModelRun, manifest: str | Path, img_size: int, **splits: list) -> None:
    """Log each split's arrays as a dataset input of the run: name "<split> <S>px", digest
    the sha256 of its .npz files, source the manifest (`splits`: {split: [npz paths]})."""
    for split, files in splits.items():
        run.log_datasets(split, f"{split} {img_size}px", hash_files(files)[:16], manifest)


def stage_identity(
    config: Mapping,
    *,
    split_seed: int,
    data_files: list,
    manifest: str | Path,
    code: str,
    libraries: list[str],
    inputs: Mapping[str, str] | None = None,
    counts: Mapping[str, int] | None = None,
) -> tuple[dict, dict]:
    """(fingerprint parts, MLflow params) of a training stage.

    The fingerprint covers what decides the result: the stage config, split seed,
    input arrays, extra `inputs` hashes (e.g. a weights file), the stage's code
    (`code`: codeclosure.code_digest of its script, the rule's `code` param) and the
    installed versions of `libraries`. The run cache and the resume checkpoints are
    both keyed by fingerprint(parts). The params add the manifest hash and the image
    `counts` for the UI.
    """
    from pneumoflow.canonical import canonical_numbers, library_versions

    data_hash = hash_files(data_files)[:16]
    inputs = dict(inputs or {})
    versions = library_versions(libraries)
    parts = {
        "config": canonical_numbers(json.loads(json.dumps(dict(config), default=str))),
        "split_seed": split_seed,
        "data": data_hash,
        "code": code,
        "libraries": versions,
        **inputs,
    }
    params = {
        **config,
        "split_seed": split_seed,
        "manifest_hash": hash_files([manifest])[:16],
        "data_hash": data_hash,
        "code_hash": code,
        **{f"{k}_version": v for k, v in versions.items()},
        **{f"{k}_hash": v for k, v in inputs.items()},
        **(counts or {}),
    }
    return parts, params


def run_tracked(
    settings: TrackingSettings,
    *,
    name: str,
    params: Mapping,
    tags: Mapping[str, str],
    fingerprint_parts: Mapping,
    outputs: Mapping[str, str | Path],
    run_id_out: str | Path,
    work,
    on_success=None,
    model_output: str | None = None,
) -> str | None:
    """Run `work(run: ModelRun)` in a new MLflow run, or restore its outputs from a cached run.

    `outputs` ({artifact name: path}) are the files `work` writes; they are logged
    under outputs/ and restored from there when a FINISHED run with the same
    fingerprint exists and mlflow.reuse_runs is on. `model_output` names the one of
    them that `work` logs as the run's MLflow model (mlflow_models.log_model): it is
    not copied to outputs/ too, but restored from that model. The run id (empty without
    tracking) is written to `run_id_out`. Returns the run id.
    """
    from pneumoflow.atomic import write_bytes

    client = connect(settings)
    exp_id = experiment_id(client, settings) if client else None
    fp = fingerprint(fingerprint_parts)
    cached = find_cached_run(client, exp_id, fp) if client and settings.reuse_runs else None
    if cached is not None and _restored(client, cached.info.run_id, outputs, model_output):
        log.info(
            "restored outputs from MLflow run %s (same fingerprint %s): not retrained",
            cached.info.run_id,
            fp[:12],
        )
        run_id = cached.info.run_id
        if model_output is not None:
            from pneumoflow import registry

            registry.point_alias(client, name, run_id)
    else:
        interval = settings.system_metrics_interval if settings.system_metrics else None
        with ModelRun(client, exp_id, name, params, {**tags, FINGERPRINT_TAG: fp}, interval) as run:
            work(run)
            run.log_outputs({k: v for k, v in outputs.items() if k != model_output})
        run_id = run.run_id
    if on_success is not None:  # e.g. drop the training state, only once all is logged
        on_success()
    write_bytes(run_id_out, (run_id or "").encode())
    return run_id
