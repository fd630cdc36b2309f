"""Kaggle RSNA submissions: read, write, score (`pneumoflow score`)."""

from __future__ import annotations

from pathlib import Path

from pneumoflow import metrics
from pneumoflow.labels import LABEL_COLUMNS, read_csv


def read_truths(labels_csv: str | Path) -> dict[str, list[metrics.Box]]:
    """{patientId: boxes} from stage_2_train_labels.csv ([] for Target=0 patients)."""
    truths: dict[str, list[metrics.Box]] = {}
    for row in read_csv(labels_csv, LABEL_COLUMNS).itertuples(index=False):
        boxes = truths.setdefault(row.patientId, [])
        if row.Target == "1":
            boxes.append((float(row.x), float(row.y), float(row.width), float(row.height)))
    return truths


def read_submission(path: str | Path) -> dict[str, list[metrics.ScoredBox]]:
    """{patientId: scored boxes} from a `patientId,PredictionString` CSV."""
    table = read_csv(path, ["patientId", "PredictionString"])
    preds = {}
    for line, row in enumerate(table.itertuples(index=False), start=2):
        try:
            preds[row.patientId] = metrics.parse_prediction_string(row.PredictionString)
        except ValueError as exc:
            raise ValueError(f"{path}:{line}: {exc}") from exc
    return preds


def score_submission(submission_csv: str | Path, labels_csv: str | Path) -> tuple[float, int]:
    """(RSNA score, images scored) of a submission against labels, over the submission's images."""
    preds, truths = read_submission(submission_csv), read_truths(labels_csv)
    unknown = sorted(set(preds) - set(truths))
    if unknown:
        raise ValueError(
            f"{len(unknown)} patientIds of {submission_csv} are not in {labels_csv}, e.g. {unknown[0]}"
        )
    return metrics.rsna_score(preds, {pid: truths[pid] for pid in preds}), len(preds)
