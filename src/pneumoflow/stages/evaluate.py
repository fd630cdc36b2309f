"""The evaluate stage: one trained model on the test split -> metrics.json, plots, predictions.

U-Net: pixel Dice/IoU, per-image Dice, boxes from the predicted mask scored with
the RSNA metric, and an image-level pneumonia score (max probability) with ROC-AUC.
Classifiers: accuracy, precision, recall, specificity, F1, ROC-AUC, confusion matrix.
Every figure also goes into the model's MLflow run as test_* metrics. The test split is read
one shard at a time: memory holds one shard's arrays (and the U-Net's probabilities for it),
plus per-image figures and the few images the plots show.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pneumoflow.core.atomic import atomic_path
from pneumoflow.core.diskrows import npy_layout
from pneumoflow.core.tables import read_manifest, truth_boxes
from pneumoflow.formats import arrays
from pneumoflow.models import metrics as measure
from pneumoflow.tracking import model_run, run_cache
from pneumoflow.tracking.client import connect
from pneumoflow.tracking.settings import TrackingSettings, exported_section

log = logging.getLogger(__name__)


def unet_shard(prob, masks, patient_ids, frame, threshold: float, pp, gate_probs=None):
    """One shard's share of the U-Net's test figures: (pixel_counts, {patientId: raw boxes},
    {patientId: post-processed boxes}, image scores (n,) = max probability), boxes in each
    image's own frame. prob (n, S, S) float32, masks (n, S, S) {0, 1}; `frame`: the manifest
    indexed by patientId; `gate_probs` (n,): the gate classifier's test probabilities."""
    from pneumoflow.models import postprocessing as postprocess

    raw, post = {}, {}
    for i, (pid, p) in enumerate(zip(patient_ids, prob, strict=True)):
        rows, cols = frame.rows[pid], frame.cols[pid]
        raw[pid] = measure.boxes_in_frame(p, threshold, rows, cols)
        gate = None if gate_probs is None or pp.gate is None else float(gate_probs[i])
        post[pid] = postprocess.boxes(p, rows, cols, pp, gate)
    counts = measure.pixel_counts(prob > threshold, masks > 0)
    return counts, raw, post, prob.reshape(len(prob), -1).max(axis=1)


def unet_metrics(counts, labels, patient_ids, raw, post, truths, image_score, threshold: float, pp):
    """The U-Net's metrics dict from every shard's unet_shard results, joined in test order.

    Pixel metrics and rsna_score_raw use `threshold` as is; rsna_score and
    empty_rate_negative_postprocessed use the PostProcess `pp` tuned on val.
    """
    result: dict[str, Any] = measure.overlap_from_counts(counts)
    result["rsna_score_raw"] = measure.rsna_score(raw, truths)
    result["rsna_score"] = measure.rsna_score(post, truths)
    negatives = [pid for pid, label in zip(patient_ids, labels, strict=True) if label == 0]
    if negatives:
        result["empty_rate_negative_postprocessed"] = float(np.mean([not post[pid] for pid in negatives]))
    cls = measure.classification(labels, image_score, threshold)
    result.update({"image_roc_auc": cls["roc_auc"], "image_accuracy": cls["accuracy"], "n_test": len(labels)})
    result["postprocess"] = pp.to_dict()
    return result


class Samples:
    """The few test images a figure shows, picked while the shards stream past: the first `n`,
    or (opacity_first) the first `n` with a true opacity, then the first without."""

    def __init__(self, n: int = 8, opacity_first: bool = False):
        self.n, self.opacity_first = n, opacity_first
        self.kept: tuple[list, list] = ([], [])  # (with opacity, without), each [(image, *more)]

    def offer(self, images, *more, has_opacity=None) -> None:
        for i in range(len(images)):
            group = self.kept[0 if self.opacity_first and has_opacity[i] else 1]
            if len(group) < self.n:
                group.append((images[i], *(m[i] for m in more)))

    def arrays(self) -> list[np.ndarray]:
        chosen = (self.kept[0] + self.kept[1])[: self.n]
        return [np.asarray(column) for column in zip(*chosen, strict=True)]


def write_json(data: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=float))


def log_test_metrics(
    run_id_file: str | Path, result: dict, mlflow_section: dict, test: tuple[list, str, int] | None = None
) -> None:
    """Add test_* metrics to the model's training run (one row per model in the UI), and
    `test` = (the test .npz files, the manifest, image size) as its "test" dataset input."""
    run_id = Path(run_id_file).read_text().strip()
    client = connect(TrackingSettings.from_config(mlflow_section)) if run_id else None
    if client is None:
        log.info("no MLflow run to add test metrics to")
        return
    scalars = {
        f"test_{k}": float(v)
        for k, v in result.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
    }
    run = model_run.ModelRun.attach(client, run_id)
    run.log_metrics(scalars)
    if test is not None:
        files, manifest, img_size = test
        run_cache.log_split_inputs(run, manifest, img_size, test=files)
    log.info("logged %d test metrics to MLflow run %s", len(scalars), run_id)


def run(
    *,
    model: str,
    model_file: str,
    test: list[str],
    manifest: str,
    boxes: str,
    run_id: str,
    metrics: str,
    threshold: float | None = None,
    postprocess: str | None = None,
    gate: str | None = None,
) -> dict:
    """Evaluate `model` (a name; its saved `model_file`) on the `test` array shards; write
    `metrics` (metrics.json) and, beside it, roc.csv, roc.png, predictions.csv and samples.png;
    log the test metrics to the model's MLflow run (`run_id`). The U-Net's boxes come from its
    tuned `postprocess` settings (and the `gate` classifier's test predictions);
    `threshold` is its pixel threshold (the classifiers use the one saved with them)."""
    model_name, model_path, test_npz, run_id_file = model, model_file, test, run_id
    postprocess_json, gate_predictions, out_dir = postprocess, gate, str(Path(metrics).parent)
    threshold = 0.5 if threshold is None else threshold
    mlflow_section = exported_section()
    from pneumoflow.formats import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model_name == "unet":
        result, table, labels, score = _evaluate_unet(
            model_path, test_npz, manifest, boxes, threshold, postprocess_json, gate_predictions, out
        )
    else:
        result, table, labels, score, threshold = _evaluate_classifier(model_name, model_path, test_npz, out)
    fpr, tpr = measure.roc_points(labels, score)
    with atomic_path(out / "roc.csv") as tmp:
        pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(tmp, index=False)
    with atomic_path(out / "predictions.csv") as tmp:
        table.to_csv(tmp, index=False)
    plots.plot_roc(
        {model_name: (fpr, tpr, result.get("roc_auc", result.get("image_roc_auc")))}, out / "roc.png"
    )
    result["threshold"] = threshold
    write_json(result, out / "metrics.json")
    img_size = npy_layout(test_npz[0], "images")[1][1]  # from the header, not the pixels
    log_test_metrics(run_id_file, result, mlflow_section, (test_npz, manifest, img_size))
    log.info("%s test metrics: %s", model_name, {k: v for k, v in result.items() if k != "confusion_matrix"})
    return result


def _test_shards(test_npz: list[str], keys: tuple[str, ...]):
    """Each test shard's arrays in turn (one shard in memory at a time); ValueError when the
    split is empty."""
    total = 0
    for path in test_npz:
        part = arrays.load_arrays([path], keys=keys)
        total += len(part["labels"])
        if len(part["labels"]):
            yield part
    if total == 0:
        raise ValueError("the test split has no images; add data or raise split.test_fraction")


def _evaluate_unet(model_path, test_npz, manifest, boxes, threshold, postprocess_json, gate_predictions, out):
    """(metrics, predictions table, labels, image scores) of the U-Net, streaming the shards."""
    from pneumoflow.formats import plots
    from pneumoflow.models import postprocessing as postprocess
    from pneumoflow.models import unet_inference

    model = unet_inference.load_unet(model_path)
    frame = read_manifest(manifest).set_index("patientId")
    pp = postprocess.load(postprocess_json) if postprocess_json else postprocess.PostProcess(threshold)
    counts, raw, post, labels, ids, scores = [], {}, {}, [], [], []
    samples = Samples(opacity_first=True)
    keys = ("images", "masks", "labels", "patient_ids")
    for part in _test_shards(test_npz, keys):
        prob = unet_inference.unet_probs(model, part["images"])
        part_ids = part["patient_ids"]
        gate = postprocess.gate_probabilities(gate_predictions, part_ids) if pp.gate is not None else None
        shard_counts, shard_raw, shard_post, shard_scores = unet_shard(
            prob, part["masks"], part_ids, frame, threshold, pp, gate
        )
        counts.append(shard_counts)
        raw.update(shard_raw)
        post.update(shard_post)
        samples.offer(
            part["images"], part["masks"], prob > threshold, has_opacity=part["masks"].any(axis=(1, 2))
        )
        labels.append(part["labels"])
        ids.extend(part_ids)
        scores.append(shard_scores)
    labels, scores = np.concatenate(labels), np.concatenate(scores)
    joined = {key: np.concatenate([c[key] for c in counts]) for key in counts[0]}
    result = unet_metrics(joined, labels, ids, raw, post, truth_boxes(boxes, ids), scores, threshold, pp)
    table = pd.DataFrame(
        {"patientId": ids, "PredictionString": [measure.format_prediction_string(post[p]) for p in ids]}
    )
    plots.plot_overlays(*samples.arrays(), out / "samples.png")
    return result, table, labels, scores


def _evaluate_classifier(model_name, model_path, test_npz, out):
    """(metrics, predictions table, labels, probabilities, threshold) of a classifier (or the
    baseline), streaming the shards."""
    from pneumoflow.formats import plots
    from pneumoflow.models.scorers import load_scorer

    scorer, saved = load_scorer(model_name, model_path)
    labels, ids, scores, samples = [], [], [], Samples()
    for part in _test_shards(test_npz, ("images", "labels", "patient_ids")):
        scores.append(scorer(part["images"]))
        labels.append(part["labels"])
        ids.extend(part["patient_ids"])
        samples.offer(part["images"], part["labels"], scores[-1])
    labels, score = np.concatenate(labels), np.concatenate(scores)
    threshold = saved["threshold"]  # chosen on the validation split, never on test
    result = measure.classification(labels, score, threshold)
    result["accuracy_at_0.5"] = measure.classification(labels, score, 0.5)["accuracy"]
    result["threshold_rule"] = saved["threshold_rule"]
    result["head"] = saved.get("description", "")
    result["n_test"] = len(labels)
    table = pd.DataFrame({"patientId": ids, "probability": score, "label": labels})
    plots.plot_confusion(result["confusion_matrix"], out / "confusion.png", model_name)
    images, sample_labels, sample_scores = samples.arrays()
    plots.plot_samples(images, sample_labels, sample_scores >= threshold, out / "samples.png")
    return result, table, labels, score, threshold
