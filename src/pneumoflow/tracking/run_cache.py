"""The run cache: finished work is restored instead of redone.

A training stage's fingerprint covers (stage config, split seed, input data, the stage's
code closure, library versions); a FINISHED run of the experiment tagged with the same
fingerprint has its outputs restored. The resume checkpoints carry the same fingerprint.
The model itself is stored once, as the run's logged model (tracking.model_files,
tracking.registry)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from pneumoflow.tracking.client import connect, experiment_id
from pneumoflow.tracking.model_run import OUTPUTS, ModelRun
from pneumoflow.tracking.settings import TrackingSettings

log = logging.getLogger(__name__)

FINGERPRINT_TAG = "pneumoflow.fingerprint"


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
    return newest_finished_run(client, [exp_id], FINGERPRINT_TAG, fp)


def newest_finished_run(client, experiment_ids: list[str], tag: str, value: str):
    """The newest FINISHED run in `experiment_ids` tagged `tag` = `value`, or None."""
    runs = client.search_runs(
        experiment_ids,
        filter_string=f"tags.`{tag}` = '{value}' and attributes.status = 'FINISHED'",
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
            from pneumoflow.tracking import registry

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
    from pneumoflow.core.canonical import canonical_numbers, library_versions

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
    them that `work` logs as the run's MLflow model (tracking.model_files.log_model): it is
    not copied to outputs/ too, but restored from that model. The run id (empty without
    tracking) is written to `run_id_out`. Returns the run id.
    """
    from pneumoflow.core.atomic import write_bytes

    client = connect(settings)
    exp_id = experiment_id(client, settings) if client else None
    fp = fingerprint(fingerprint_parts)
    cached = find_cached_run(client, exp_id, fp) if exp_id is not None and settings.reuse_runs else None
    if cached is not None and _restored(client, cached.info.run_id, outputs, model_output):
        log.info(
            "restored outputs from MLflow run %s (same fingerprint %s): not retrained",
            cached.info.run_id,
            fp[:12],
        )
        run_id = cached.info.run_id
        if model_output is not None:
            from pneumoflow.tracking import registry

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
