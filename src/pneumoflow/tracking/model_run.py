"""One MLflow run of a training or evaluation stage, and its held-back metrics.

Metrics that the store does not accept (a tracking server gone mid-training) are held back
and training goes on; they are sent before anything else is logged, and the run fails,
naming the store, only if it is still gone then.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

log = logging.getLogger(__name__)

PARENT_ENV = "PNEUMOFLOW_PARENT_RUN_ID"
PIPELINE_TAG = "pneumoflow.pipeline_run_id"  # links a model run to its invocation's pipeline run
UNET_RUN_TAG = "pneumoflow.unet_run"  # links a postprocess run to the U-Net training run it tuned
OUTPUTS = "outputs"  # artifact folder holding a stage's output files, restored by the cache


class TrackingUnavailableError(RuntimeError):
    """The tracking store cannot be reached and tracking is required."""


@contextmanager
def quick_requests(retries: int = 1):
    """MLflow retries HTTP calls for minutes by default; inside this block it tries briefly."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES=str(retries), MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class ModelRun:
    """One MLflow run, opened explicitly; every method is a no-op without a client.

    Use as a context manager: the run ends FINISHED on success, FAILED on an
    exception and KILLED on Ctrl-C.
    """

    def __init__(
        self,
        client,
        exp_id: str | None,
        name: str,
        params: Mapping,
        tags: Mapping[str, str],
        system_metrics_interval: float | None = None,
    ):
        self.client, self.exp_id, self.name = client, exp_id, name
        self.params, self.tags = dict(params), dict(tags)
        self.run_id: str | None = None
        self._held: list = []  # metrics not yet accepted by the store
        self._interval = system_metrics_interval  # seconds between system samples; None: off
        self._monitor: SystemMetricsMonitor | None = None

    @classmethod
    def attach(cls, client, run_id: str) -> ModelRun:
        """Handle on an existing run (e.g. to add test metrics to a finished training run)."""
        run = cls(client, None, "", {}, {})
        run.run_id = run_id
        return run

    def __enter__(self) -> ModelRun:
        if self.client is None:
            return self
        tags = dict(self.tags)
        if parent := os.environ.get(PARENT_ENV):
            tags[PIPELINE_TAG] = parent
        run = self.client.create_run(self.exp_id, run_name=self.name, tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in sorted(self.params.items())]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        log.info("MLflow run %s (%s) in experiment %s", self.run_id, self.name, self.exp_id)
        if self._interval:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            # MLflow's own sampler: CPU, memory, disk, network, and GPU where pynvml sees one
            self._monitor = SystemMetricsMonitor(
                self.run_id, sampling_interval=self._interval, tracking_uri=self.client.tracking_uri
            )
            self._monitor.start()
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if not self.run_id:
            return
        if self._monitor is not None:
            if self._held:  # the store is gone: its sampler thread (a daemon) would retry for
                self._monitor._shutdown_event.set()  # minutes on exit; stop it without waiting
            else:
                self._monitor.finish()
        if kind is None:
            self.ensure_reachable()
        status = "FINISHED" if kind is None else "KILLED" if kind is KeyboardInterrupt else "FAILED"
        try:
            with quick_requests(retries=1 if self._held else 3):
                self.client.set_terminated(self.run_id, status)
        except Exception as exc:  # the store is gone; the run shows RUNNING until cleaned up
            if kind is None:
                raise
            log.warning("could not mark MLflow run %s %s: %s", self.run_id, status, exc)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics; while the store is unreachable they are held back and training goes on."""
        if self.run_id:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._held += [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
            self._send()

    def _send(self) -> None:
        try:
            with quick_requests():
                self.client.log_batch(self.run_id, metrics=self._held)
        except Exception as exc:
            log.warning(
                "MLflow store %s unreachable (%s): %d metric values held back; training goes on",
                self.client.tracking_uri, type(exc).__name__, len(self._held),
            )  # fmt: skip
        else:
            self._held = []

    def ensure_reachable(self) -> None:
        """Send held-back metrics; TrackingUnavailableError naming the store if it is still gone.

        Called before logging files or models, which MLflow would retry for minutes.
        """
        if self.run_id and self._held:
            self._send()
            if self._held:
                raise TrackingUnavailableError(
                    f"the MLflow store {self.client.tracking_uri} went away during training and "
                    f"{len(self._held)} metric values could not be logged; the training state is kept, "
                    "so rerun once the server is back (it resumes, it does not retrain)"
                )

    def log_datasets(self, context: str, name: str, digest: str, source: str | Path) -> None:
        """Record what the run read: dataset `name` (e.g. "train 224px"), `digest` (a hash of
        the arrays' bytes), `source` (the manifest the split comes from), under `context`."""
        if not self.run_id:
            return
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import DatasetInput, InputTag

        dataset = MetaDataset(LocalArtifactDatasetSource(str(source)), name=name, digest=digest)
        tags = [InputTag("mlflow.data.context", context)]
        with quick_requests(retries=3):
            self.client.log_inputs(self.run_id, [DatasetInput(dataset._to_mlflow_entity(), tags)])

    def log_outputs(self, outputs: Mapping[str, str | Path]) -> None:
        """Log each output file as artifact outputs/<name>, where the run cache finds it."""
        if self.run_id:
            self.ensure_reachable()
            with tempfile.TemporaryDirectory() as tmp:
                for name, path in outputs.items():
                    shutil.copyfile(path, Path(tmp) / name)
                self.client.log_artifacts(self.run_id, tmp, OUTPUTS)
