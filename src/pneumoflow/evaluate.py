"""The evaluate stage: one trained model on the test split -> metrics.json, plots, predictions.

U-Net: pixel Dice/IoU, per-image Dice, boxes from the predicted mask scored with
the RSNA metric, and an image-level pneumonia score (max probability) with ROC-AUC.
Classifiers: accuracy, precision, recall, specificity, F1, ROC-AUC, confusion matrix.
Every figure also goes into the model's MLflow run as test_* metrics.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pneumoflow import arrays, metrics, tracking
from pneumoflow.atomic import atomic_path
from pneumoflow.tables import read_manifest, read_tsv

log = logging.getLogger(__name__)


def truth_boxes(boxes_tsv: str | Path, patient_ids) -> dict[str, list[metrics.Box]]:
    """{patientId: [(x, y, w, h), ...]} in the original pixel frame, [] for negatives."""
    boxes = read_tsv(boxes_tsv, dtype={"patientId": str})
    grouped = {
        pid: list(g[["x", "y", "width", "height"]].itertuples(index=False, name=None))
        for pid, g in boxes.groupby("patientId")
    }
    return {pid: grouped.get(pid, []) for pid in patient_ids}


def unet_metrics(prob, masks, labels, patient_ids, manifest, truths, threshold: float):
    """(metrics dict, {patientId: scored boxes in the original frame})."""
    frame = manifest.set_index("patientId")
    preds = {}
    for pid, p in zip(patient_ids, prob, strict=True):
        preds[pid] = metrics.boxes_in_frame(p, threshold, frame.rows[pid], frame.cols[pid])
    image_score = prob.reshape(len(prob), -1).max(axis=1)
    result = metrics.overlap(prob > threshold, masks > 0)
    result["rsna_score"] = metrics.rsna_score(preds, truths)
    cls = metrics.classification(labels, image_score)
    result.update({"image_roc_auc": cls["roc_auc"], "image_accuracy": cls["accuracy"], "n_test": len(prob)})
    return result, preds, image_score


def write_json(data: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=float))


def log_test_metrics(run_id_file: str | Path, result: dict, mlflow_section: dict) -> None:
    """Add test_* metrics to the model's training run (one row per model in the UI)."""
    run_id = Path(run_id_file).read_text().strip()
    client = tracking.connect(tracking.TrackingSettings.from_config(mlflow_section)) if run_id else None
    if client is None:
        log.info("no MLflow run to add test metrics to")
        return
    scalars = {
        f"test_{k}": float(v) for k, v in result.items() if isinstance(v, int | float) and np.isfinite(v)
    }
    tracking.ModelRun.attach(client, run_id).log_metrics(scalars)
    log.info("logged %d test metrics to MLflow run %s", len(scalars), run_id)


def run_stage(
    model_name: str,
    *,
    model_path: str,
    test_npz: list[str],
    manifest: str,
    boxes: str,
    run_id_file: str,
    out_dir: str,
    mlflow_section: dict,
    threshold: float = 0.5,
) -> dict:
    """The evaluate rule for one model; writes metrics.json, roc.csv, predictions.csv and plots."""
    from pneumoflow import plots

    data = arrays.load_arrays(test_npz)
    if len(data["labels"]) == 0:
        raise ValueError("the test split has no images; add data or raise split.test_fraction")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels, ids = data["labels"], data["patient_ids"]
    if model_name == "unet":
        from pneumoflow import unet_inference

        prob = unet_inference.unet_probs(unet_inference.load_unet(model_path), data["images"])
        truths = truth_boxes(boxes, ids)
        result, preds, score = unet_metrics(
            prob, data["masks"], labels, ids, read_manifest(manifest), truths, threshold
        )
        table = pd.DataFrame(
            {"patientId": ids, "PredictionString": [metrics.format_prediction_string(preds[p]) for p in ids]}
        )
        plots.plot_overlays(data["images"], data["masks"], prob > threshold, out / "samples.png")
    else:
        from pneumoflow.classifier_inference import classifier_probs, load_classifier

        score = classifier_probs(load_classifier(model_name, model_path), data["images"])
        result = metrics.classification(labels, score, threshold)
        result["n_test"] = len(labels)
        table = pd.DataFrame({"patientId": ids, "probability": score, "label": labels})
        plots.plot_confusion(result["confusion_matrix"], out / "confusion.png", model_name)
        plots.plot_samples(data["images"], labels, score >= threshold, out / "samples.png")
    fpr, tpr = metrics.roc_points(labels, score)
    with atomic_path(out / "roc.csv") as tmp:
        pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(tmp, index=False)
    with atomic_path(out / "predictions.csv") as tmp:
        table.to_csv(tmp, index=False)
    plots.plot_roc(
        {model_name: (fpr, tpr, result.get("roc_auc", result.get("image_roc_auc")))}, out / "roc.png"
    )
    result["threshold"] = threshold
    write_json(result, out / "metrics.json")
    log_test_metrics(run_id_file, result, mlflow_section)
    log.info("%s test metrics: %s", model_name, {k: v for k, v in result.items() if k != "confusion_matrix"})
    return result
