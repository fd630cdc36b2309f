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
from pneumoflow.tables import read_manifest, truth_boxes

log = logging.getLogger(__name__)


def unet_metrics(prob, masks, labels, patient_ids, manifest, truths, threshold: float, pp, gate_probs=None):
    """(metrics dict, {patientId: post-processed scored boxes in the original frame}, image scores).

    Pixel metrics and rsna_score_raw use `threshold` as is; rsna_score and
    empty_rate_negative_postprocessed use the PostProcess `pp` tuned on val (gated on the
    classifier's test probabilities `gate_probs` (N,) when it has a gate).
    """
    from pneumoflow import postprocess

    frame = manifest.set_index("patientId")
    raw, post = {}, {}
    for i, (pid, p) in enumerate(zip(patient_ids, prob, strict=True)):
        rows, cols = frame.rows[pid], frame.cols[pid]
        raw[pid] = metrics.boxes_in_frame(p, threshold, rows, cols)
        gate = None if gate_probs is None or pp.gate is None else float(gate_probs[i])
        post[pid] = postprocess.boxes(p, rows, cols, pp, gate)
    image_score = prob.reshape(len(prob), -1).max(axis=1)
    result = metrics.overlap(prob > threshold, masks > 0)
    result["rsna_score_raw"] = metrics.rsna_score(raw, truths)
    result["rsna_score"] = metrics.rsna_score(post, truths)
    negatives = [pid for pid, label in zip(patient_ids, labels, strict=True) if label == 0]
    if negatives:
        result["empty_rate_negative_postprocessed"] = float(np.mean([not post[pid] for pid in negatives]))
    cls = metrics.classification(labels, image_score, threshold)
    result.update({"image_roc_auc": cls["roc_auc"], "image_accuracy": cls["accuracy"], "n_test": len(prob)})
    result["postprocess"] = pp.to_dict()
    return result, post, image_score


def write_json(data: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=float))


def log_test_metrics(
    run_id_file: str | Path, result: dict, mlflow_section: dict, test: tuple[list, str, int] | None = None
) -> None:
    """Add test_* metrics to the model's training run (one row per model in the UI), and
    `test` = (the test .npz files, the manifest, image size) as its "test" dataset input."""
    run_id = Path(run_id_file).read_text().strip()
    client = tracking.connect(tracking.TrackingSettings.from_config(mlflow_section)) if run_id else None
    if client is None:
        log.info("no MLflow run to add test metrics to")
        return
    scalars = {
        f"test_{k}": float(v)
        for k, v in result.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
    }
    run = tracking.ModelRun.attach(client, run_id)
    run.log_metrics(scalars)
    if test is not None:
        files, manifest, img_size = test
        tracking.log_split_inputs(run, manifest, img_size, test=files)
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
    postprocess_json: str | None = None,
    gate_predictions: str | None = None,
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
        from pneumoflow import postprocess, unet_inference

        prob = unet_inference.unet_probs(unet_inference.load_unet(model_path), data["images"])
        truths = truth_boxes(boxes, ids)
        pp = postprocess.load(postprocess_json) if postprocess_json else postprocess.PostProcess(threshold)
        gate_probs = postprocess.gate_probabilities(gate_predictions, ids) if pp.gate is not None else None
        result, preds, score = unet_metrics(
            prob, data["masks"], labels, ids, read_manifest(manifest), truths, threshold, pp, gate_probs
        )
        table = pd.DataFrame(
            {"patientId": ids, "PredictionString": [metrics.format_prediction_string(preds[p]) for p in ids]}
        )
        plots.plot_overlays(data["images"], data["masks"], prob > threshold, out / "samples.png")
    else:
        from pneumoflow.scorers import load_scorer

        scorer, saved = load_scorer(model_name, model_path)
        score = scorer(data["images"])
        threshold = saved["threshold"]  # chosen on the validation split, never on test
        result = metrics.classification(labels, score, threshold)
        result["accuracy_at_0.5"] = metrics.classification(labels, score, 0.5)["accuracy"]
        result["threshold_rule"] = saved["threshold_rule"]
        result["head"] = saved.get("description", "")
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
    log_test_metrics(run_id_file, result, mlflow_section, (test_npz, manifest, data["images"].shape[1]))
    log.info("%s test metrics: %s", model_name, {k: v for k, v in result.items() if k != "confusion_matrix"})
    return result
