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


def predict_unet(model_path: str | Path, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Opacity probabilities (N, S, S) float32 for images (N, S, S) uint8."""
    import keras

    model = keras.models.load_model(model_path, compile=False)
    x = images[..., None].astype("float32") / 255.0
    return model.predict(x, batch_size=batch_size, verbose=0)[..., 1]


def unet_metrics(prob, masks, labels, patient_ids, manifest, truths, threshold: float):
    """(metrics dict, {patientId: scored boxes in the original frame})."""
    size = prob.shape[1]
    frame = manifest.set_index("patientId")
    preds = {}
    for pid, p in zip(patient_ids, prob, strict=True):
        scale = (frame.cols[pid] / size, frame.rows[pid] / size)
        preds[pid] = metrics.boxes_from_mask(p, threshold, scale)
    image_score = prob.reshape(len(prob), -1).max(axis=1)
    result = metrics.overlap(prob > threshold, masks > 0)
    result["rsna_score"] = metrics.rsna_score(preds, truths)
    cls = metrics.classification(labels, image_score)
    result.update({"image_roc_auc": cls["roc_auc"], "image_accuracy": cls["accuracy"], "n_test": len(prob)})
    return result, preds, image_score


def classifier_probs(
    name: str, model_path: str | Path, images: np.ndarray, batch_size: int = 32
) -> np.ndarray:
    """Pneumonia probabilities (N,) float32 from a saved state dict, same preprocessing as training."""
    import torch

    from pneumoflow import classifiers, torchdata

    model, _ = classifiers.build_classifier(name, None)
    model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
    model.eval()
    probs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).unsqueeze(1)
            probs.append(model(torchdata.to_model_input(batch)).softmax(1)[:, 1].numpy())
    return np.concatenate(probs) if probs else np.zeros(0, np.float32)


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
        prob = predict_unet(model_path, data["images"])
        truths = truth_boxes(boxes, ids)
        result, preds, score = unet_metrics(
            prob, data["masks"], labels, ids, read_manifest(manifest), truths, threshold
        )
        table = pd.DataFrame(
            {"patientId": ids, "PredictionString": [metrics.format_prediction_string(preds[p]) for p in ids]}
        )
        plots.plot_overlays(data["images"], data["masks"], prob > threshold, out / "samples.png")
    else:
        score = classifier_probs(model_name, model_path, data["images"])
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
