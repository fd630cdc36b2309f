"""The MLflow UI on the project's store: `pneumoflow ui` (what `make ui` runs).

MLflow 3.17's UI opens every experiment on its GenAI pages (traces, token usage) unless the
URL asks for `workflowType=machine_learning`; the `mlflow.experimentKind` tag alone no longer
decides it. The experiment therefore also carries a saved view, "Model comparison" (an
experiment tag the UI reads, as if a user had saved it): the training runs, one row per
model, with the datasets they read, their registered versions, test metrics and key params
as columns, sorted by test ROC-AUC. The URL printed here opens both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

VIEW_KEY = "model-comparison"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
# Few enough to fit a 1920-px window: the runs table does not render columns off screen.
METRIC_COLUMNS = ["test_roc_auc", "test_accuracy", "test_rsna_score"]
PARAM_COLUMNS = ["img_size", "lr"]


def comparison_view() -> str:
    """The saved view's tag value: MLflow's envelope {name, createdAt, updatedAt, state}, the
    state being the runs table's facets and columns as the UI serialises them. It lists the
    training runs only (not the pipeline and post-processing runs), test ROC-AUC first."""
    columns = (
        [f"metrics.`{m}`" for m in METRIC_COLUMNS]
        + [f"params.`{p}`" for p in PARAM_COLUMNS]
        + ["attributes.`Dataset`", "attributes.`Models`"]
    )
    state = {
        "searchFilter": "tags.`pneumoflow.rule` LIKE 'train_%'",
        "orderByKey": "metrics.`test_roc_auc`",
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": ["attributes.`Dataset`", "attributes.`Models`", *columns[:-2]],
    }
    now = int(time.time() * 1000)
    envelope = {"name": "Model comparison", "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    return json.dumps(envelope)


def view_is_current(tag_value: str | None) -> bool:
    """Whether a stored view tag holds this version's view (its timestamps aside)."""
    if tag_value is None:
        return False
    try:
        return json.loads(tag_value)["state"] == json.loads(comparison_view())["state"]
    except (TypeError, ValueError, KeyError):
        return False


def experiment_url(base: str, exp_id: str) -> str:
    """The page that opens on the model runs, as columns, sorted by test ROC-AUC."""
    return f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def serve(tracking_uri: str, experiment: str, port: int = 5000, host: str = "127.0.0.1") -> int:
    """Start `mlflow ui` on the store and say which URL to open; returns its exit code."""
    from mlflow import MlflowClient

    from pneumoflow.tracking.client import experiment_id
    from pneumoflow.tracking.settings import TrackingSettings

    client = MlflowClient(tracking_uri=tracking_uri)
    if client.get_experiment_by_name(experiment) is None:
        print(f"no experiment {experiment!r} in {tracking_uri}: run `make run` first", file=sys.stderr)
        return 1
    # (the saved view too, on a store that an older version made)
    exp_id = experiment_id(client, TrackingSettings(tracking_uri=tracking_uri, experiment=experiment))
    url = experiment_url(f"http://{host}:{port}", exp_id)
    print(f"MLflow UI on {tracking_uri}\nopen {url}\n(Ctrl-C stops it)", flush=True)
    cmd = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
