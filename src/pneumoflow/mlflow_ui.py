"""The MLflow UI on the project's store: `pneumoflow ui` (what `make ui` runs).

MLflow 3.17's UI opens every experiment on its GenAI pages (traces, token usage) unless the
URL asks for `workflowType=machine_learning`; the `mlflow.experimentKind` tag alone no longer
decides it. The experiment therefore also carries a saved view, "Model comparison" (an
experiment tag the UI reads, as if a user had saved it): the model runs with their test
metrics and key params as columns, sorted by test ROC-AUC. The URL printed here opens both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

VIEW_KEY = "model-comparison"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
METRIC_COLUMNS = [
    "test_roc_auc", "test_accuracy", "test_f1", "test_recall", "test_specificity", "best_val_acc",
    "test_mean_dice_positive", "test_rsna_score", "test_image_roc_auc",
]  # fmt: skip
PARAM_COLUMNS = ["img_size", "weights", "lr", "epochs", "batch_size"]


def comparison_view() -> str:
    """The saved view's tag value: MLflow's envelope {name, createdAt, updatedAt, state}, the
    state being the runs table's facets and columns as the UI serialises them."""
    state = {
        "orderByKey": "metrics.`test_roc_auc`",
        "orderByAsc": False,
        "selectedColumns": [f"metrics.`{m}`" for m in METRIC_COLUMNS]
        + [f"params.`{p}`" for p in PARAM_COLUMNS],
    }
    now = int(time.time() * 1000)
    return json.dumps(
        {"name": "Model comparison", "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    )


def experiment_url(base: str, exp_id: str) -> str:
    """The page that opens on the model runs, as columns, sorted by test ROC-AUC."""
    return f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def serve(tracking_uri: str, experiment: str, port: int = 5000, host: str = "127.0.0.1") -> int:
    """Start `mlflow ui` on the store and say which URL to open; returns its exit code."""
    from mlflow import MlflowClient

    found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    if found is None:
        print(f"no experiment {experiment!r} in {tracking_uri}: run `make run` first", file=sys.stderr)
        return 1
    url = experiment_url(f"http://{host}:{port}", found.experiment_id)
    print(f"MLflow UI on {tracking_uri}\nopen {url}\n(Ctrl-C stops it)", flush=True)
    cmd = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
