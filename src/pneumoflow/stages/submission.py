"""Rule submission (run), and Kaggle RSNA submissions: write, read, score (`pneumoflow score`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pneumoflow.core.atomic import atomic_path
from pneumoflow.formats.labels import LABEL_COLUMNS, read_csv
from pneumoflow.models import metrics


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


def write_submission(
    image_dir: str | Path,
    unet_model: str | Path,
    out_csv: str | Path,
    *,
    postprocess_json: str | Path,
    gate_with: str | None = None,
    gate_model: str | Path | None = None,
    batch_size: int = 32,
) -> pd.DataFrame:
    """Kaggle RSNA submission (patientId,PredictionString) for every .dcm of `image_dir`,
    boxes "conf x y w h" in each image's own pixels, post-processed as tuned on val (gated on
    `gate_with`'s probability when the tuned setting has a gate)."""
    from pneumoflow.formats.images import read_source
    from pneumoflow.models import postprocessing as postprocess

    pp = postprocess.load(postprocess_json)
    scorer = None
    if pp.gate is not None:
        if gate_with is None or gate_model is None:
            raise ValueError(
                f"{postprocess_json} gates boxes on {gate_with or 'a classifier'}, but no model for it was "
                "given; rerun the pipeline (rule postprocess) or train that classifier"
            )
        # PyTorch before TensorFlow: with these wheels the other order crashes the process
        from pneumoflow.models.scorers import load_scorer

        scorer, saved = load_scorer(gate_with, gate_model)
    from pneumoflow.models.unet_inference import load_unet, predict_sources

    paths = sorted(Path(image_dir).glob("*.dcm"))
    if not paths:
        raise ValueError(f"{image_dir} holds no .dcm files to predict")
    model, rows = load_unet(unet_model), []
    for start in range(0, len(paths), batch_size):
        batch = paths[start : start + batch_size]
        sources = [read_source(p) for p in batch]
        gate_probs = None
        if scorer is not None:
            gate_probs = scorer(np.stack([s.resized(saved["img_size"]) for s in sources]))
        _, boxes = predict_sources(model, sources, pp, gate_probs)
        rows += [(p.stem, metrics.format_prediction_string(b)) for p, b in zip(batch, boxes, strict=True)]
    table = pd.DataFrame(rows, columns=["patientId", "PredictionString"])
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table


def run(
    *,
    image_dir: str,
    model: str,
    postprocess: str,
    submission: str,
    gate_with: str | None = None,
    gate_model: str | None = None,
) -> pd.DataFrame:
    """Write `submission` (Kaggle's CSV) for the test DICOMs in `image_dir` with the U-Net
    `model` and its tuned `postprocess` settings (gated on `gate_with`'s `gate_model`)."""
    return write_submission(
        image_dir, model, submission, postprocess_json=postprocess, gate_with=gate_with, gate_model=gate_model
    )
