"""Test metrics: segmentation overlap, boxes from masks, the RSNA competition score.

Boxes are (x, y, w, h) in pixels; predicted boxes carry a confidence first:
(conf, x, y, w, h), as in a Kaggle PredictionString.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from skimage.measure import label, regionprops

IOU_THRESHOLDS = np.round(np.arange(0.40, 0.76, 0.05), 2)  # 0.40, 0.45, ..., 0.75

Box = tuple[float, float, float, float]
ScoredBox = tuple[float, float, float, float, float]


def overlap(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Segmentation metrics of binary masks (N, H, W) bool.

    dice / iou: over all pixels of all images (1.0 when both are empty);
    mean_iou_2class: two_class_mean_iou, the seed study's "mean IoU" (background included);
    mean_dice_positive: mean per-image Dice over images with a true opacity;
    empty_rate_negative: share of images without opacity predicted empty.
    """
    return overlap_from_counts(pixel_counts(pred, true))


def pixel_counts(pred: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image pixel counts of binary masks (N, H, W): {"inter", "pred", "true", "pixels"},
    each (N,) int64. Counts of several batches concatenate: overlap_from_counts of them equals
    overlap of the whole (so evaluation can go one shard at a time)."""
    if pred.shape != true.shape:
        raise ValueError(f"pred and true masks must have one shape, got {pred.shape} and {true.shape}")
    pred, true = pred.astype(bool), true.astype(bool)
    return {
        "inter": (pred & true).sum(axis=(1, 2), dtype=np.int64),
        "pred": pred.sum(axis=(1, 2), dtype=np.int64),
        "true": true.sum(axis=(1, 2), dtype=np.int64),
        "pixels": np.full(len(pred), pred[0].size if len(pred) else 0, np.int64),
    }


def overlap_from_counts(counts: Mapping[str, np.ndarray]) -> dict[str, float]:
    """overlap's metrics from pixel_counts (or several of them concatenated key by key)."""
    inter, p_sum, t_sum = (int(counts[k].sum()) for k in ("inter", "pred", "true"))
    union = p_sum + t_sum - inter
    positive = counts["true"] > 0
    per_dice = 2 * counts["inter"][positive] / (counts["pred"] + counts["true"])[positive]
    negative_empty = counts["pred"][~positive] == 0
    # {background, opacity} IoU as two_class_mean_iou: a class in neither mask is left out
    pixels = int(counts["pixels"].sum())
    ious = [i / u for i, u in ((pixels - union, pixels - inter), (inter, union)) if u]
    return {
        "dice": float(2 * inter / (p_sum + t_sum)) if p_sum + t_sum else 1.0,
        "iou": float(inter / union) if union else 1.0,
        "mean_iou_2class": float(np.mean(ious)) if ious else float("nan"),
        "mean_dice_positive": float(per_dice.mean()) if positive.any() else float("nan"),
        "empty_rate_negative": float(negative_empty.mean()) if (~positive).any() else float("nan"),
    }


def two_class_mean_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over {background, opacity} of each class's IoU over all pixels of (N, H, W) bool masks.

    Keras MeanIoU(num_classes=2), the seed study's 0.9528 "mean IoU": background
    dominates the pixel count, so it reads far higher than the opacity-only IoU. As in
    Keras, a class in neither mask is left out of the mean; NaN for no pixels at all.
    """
    if pred.shape != true.shape:
        raise ValueError(f"pred and true masks must have one shape, got {pred.shape} and {true.shape}")
    pred, true = pred.astype(bool), true.astype(bool)
    ious = []
    for p, t in ((~pred, ~true), (pred, true)):
        union = (p | t).sum()
        if union:
            ious.append((p & t).sum() / union)
    return float(np.mean(ious)) if ious else float("nan")


def boxes_from_mask(
    prob: np.ndarray, threshold: float, scale: tuple[float, float] = (1.0, 1.0)
) -> list[ScoredBox]:
    """Bounding boxes of the connected components of prob > threshold, most confident first.

    prob: (H, W) float in [0, 1]. Confidence: the component's mean probability.
    scale (sx, sy) maps the mask's pixels to another frame (e.g. the original image).
    """
    components = label(prob > threshold, connectivity=2)
    boxes = []
    for region in regionprops(components, intensity_image=prob):
        y0, x0, y1, x1 = region.bbox
        sx, sy = scale
        boxes.append((float(region.intensity_mean), x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy))
    return sorted(boxes, key=lambda b: -b[0])


def boxes_in_frame(prob: np.ndarray, threshold: float, rows: int, cols: int) -> list[ScoredBox]:
    """Scored boxes of a (S, S) probability map, in the pixels of the rows x cols original image."""
    size_y, size_x = prob.shape
    return boxes_from_mask(prob, threshold, (cols / size_x, rows / size_y))


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def threshold_scores(preds: Sequence[ScoredBox], truths: Sequence[Box]) -> np.ndarray:
    """TP / (TP + FP + FN) at each of IOU_THRESHOLDS, (8,) float64, for an image with at least
    one truth and one prediction.

    The matching rule is the competition's evaluation text (kaggle.com/c/rsna-pneumonia-detection-
    challenge, Evaluation): "a predicted object is considered a 'hit' if its intersection over
    union with a ground truth object is greater than" t, and "Bounding boxes will be evaluated in
    order of their confidence levels [...] boxes with higher confidence will be checked first for
    matches against solutions, which determines what boxes are considered true and false
    positives." So the predictions take turns, most confident first; each takes the unmatched
    truth it overlaps most (the text leaves this choice open), a hit when IoU > t.

    The widely copied public kernel (Yicheng Chen, "Mean Average Precision Metric",
    kaggle.com/chenyc15/mean-average-precision-metric) loops over the truths instead, each taking
    the most confident unmatched prediction with IoU >= t. The two part when a prediction could
    match more than one truth or a truth more than one prediction, and when an IoU equals a
    threshold exactly (tests/test_metrics.py works such cases by hand).
    """
    ordered = sorted(preds, key=lambda p: -p[0])
    ious = np.array([[box_iou(p[1:], t) for t in truths] for p in ordered])
    scores = []
    for t in IOU_THRESHOLDS:
        matched = np.zeros(len(truths), bool)
        tp = 0
        for row in ious:
            candidates = np.where(~matched & (row > t), row, -1.0)
            best = int(candidates.argmax())
            if candidates[best] > t:
                matched[best] = True
                tp += 1
        fp, fn = len(ordered) - tp, len(truths) - tp
        scores.append(tp / (tp + fp + fn))
    return np.array(scores)


def image_score(preds: Sequence[ScoredBox], truths: Sequence[Box]) -> float | None:
    """RSNA score of one image: the mean of threshold_scores (its docstring states the matching
    rule and its source). None when the image has neither truths nor predictions (it is left
    out of the mean); 0 when it has no truth but any prediction, or truths and no prediction.
    """
    if not truths and not preds:
        return None
    if not truths or not preds:
        return 0.0
    return float(threshold_scores(preds, truths).mean())


def rsna_score(preds: Mapping[str, Sequence[ScoredBox]], truths: Mapping[str, Sequence[Box]]) -> float:
    """Mean image_score over the images of `truths` (missing predictions count as none)."""
    scores = [image_score(preds.get(pid, []), boxes) for pid, boxes in truths.items()]
    kept = [s for s in scores if s is not None]
    return float(np.mean(kept)) if kept else float("nan")


def parse_prediction_string(text: str) -> list[ScoredBox]:
    """'conf x y w h conf x y w h ...' -> [(conf, x, y, w, h), ...]; '' -> []."""
    values = str(text or "").split()
    if len(values) % 5:
        raise ValueError(
            f"PredictionString needs groups of 5 numbers (conf x y w h), got {len(values)} values"
        )
    numbers = [float(v) for v in values]
    groups = (numbers[i : i + 5] for i in range(0, len(numbers), 5))
    return [(conf, x, y, w, h) for conf, x, y, w, h in groups]


def format_prediction_string(boxes: Sequence[ScoredBox]) -> str:
    """Inverse of parse_prediction_string, with pixel coordinates rounded to integers."""
    return " ".join(f"{c:.4f} {round(x)} {round(y)} {round(w)} {round(h)}" for c, x, y, w, h in boxes)


def classification(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, object]:
    """Binary metrics from labels (N,) {0,1} and pneumonia probabilities (N,) float."""
    from sklearn.metrics import roc_auc_score

    labels, pred = labels.astype(int), (probs >= threshold).astype(int)
    tp, tn = int(((pred == 1) & (labels == 1)).sum()), int(((pred == 0) & (labels == 0)).sum())
    fp, fn = int(((pred == 1) & (labels == 0)).sum()), int(((pred == 0) & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    both_classes = len(np.unique(labels)) == 2
    return {
        "accuracy": (tp + tn) / len(labels),
        "precision": precision,
        "recall": recall,
        "specificity": tn / (tn + fp) if tn + fp else 0.0,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "roc_auc": float(roc_auc_score(labels, probs)) if both_classes else float("nan"),
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) of the ROC curve; empty when one class is missing."""
    from sklearn.metrics import roc_curve

    if len(np.unique(labels)) < 2:
        return np.zeros(0), np.zeros(0)
    fpr, tpr, _ = roc_curve(labels.astype(int), scores)
    return fpr, tpr
