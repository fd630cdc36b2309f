"""The reference classifier every run trains beside the deep models: logistic regression on
the images shrunk to a few pixels (scikit-learn). A deep model that does not beat it on the
test split is flagged in the report.

The fitted model is stored as plain numbers in a JSON file (no pickle):
{"pixels", "img_size", "mean", "scale", "coef", "intercept", "C", "threshold", "threshold_rule"}.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pneumoflow import arrays, codeclosure, thresholds, tracking
from pneumoflow.atomic import atomic_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaselineConfig:
    """Config `models.baseline`."""

    img_size: int = 128
    pixels: int = 32
    C: float = 0.1  # noqa: N815 (scikit-learn's name)

    @classmethod
    def from_config(cls, section: dict) -> BaselineConfig:
        return cls(**{k: v for k, v in section.items() if k not in ("enabled", "threads", "gpus")})


def downsample(images: np.ndarray, pixels: int) -> np.ndarray:
    """(N, S, S) uint8 -> (N, pixels * pixels) float32 in [0, 1] (area interpolation)."""
    small = [cv2.resize(image, (pixels, pixels), interpolation=cv2.INTER_AREA) for image in images]
    return np.stack(small).reshape(len(images), -1).astype(np.float32) / 255.0


def fit(train_images: np.ndarray, train_labels: np.ndarray, cfg: BaselineConfig) -> dict:
    """Standardize + L2 logistic regression on the downsampled train split; the model as numbers."""
    from sklearn.linear_model import LogisticRegression

    x = downsample(train_images, cfg.pixels)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=cfg.C, max_iter=5000).fit((x - mean) / scale, train_labels.astype(int))
    return {
        "pixels": cfg.pixels,
        "img_size": cfg.img_size,
        "C": cfg.C,
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": clf.coef_[0].tolist(),
        "intercept": float(clf.intercept_[0]),
    }


def probabilities(model: dict, images: np.ndarray) -> np.ndarray:
    """Pneumonia probabilities (N,) float32 of (N, S, S) uint8 images."""
    x = (downsample(images, model["pixels"]) - np.asarray(model["mean"])) / np.asarray(model["scale"])
    logits = x @ np.asarray(model["coef"]) + model["intercept"]
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def run_stage(
    section: dict,
    *,
    train_npz: list[str],
    val_npz: list[str],
    manifest: str,
    model_out: str,
    val_predictions_out: str,
    run_id_out: str,
    mlflow_section: dict,
    tags: dict[str, str],
    split_seed: int,
    code: str | None = None,
) -> str | None:
    """The train_baseline rule: fit on train, choose the threshold on val, track in MLflow.
    `code`: the rule's code digest (default: of this module's closure)."""
    cfg = BaselineConfig.from_config(section)
    train = arrays.load_arrays(train_npz, keys=("images", "labels"))
    val = arrays.load_arrays(val_npz, keys=("images", "labels", "patient_ids"))
    if len(np.unique(train["labels"])) < 2:
        raise ValueError("the train split holds one class only: the baseline has nothing to separate")
    parts, params = tracking.stage_identity(
        dataclasses.asdict(cfg),
        split_seed=split_seed,
        data_files=[*train_npz, *val_npz],
        manifest=manifest,
        code=code or codeclosure.code_digest(__file__),
        libraries=["scikit-learn", "opencv-python-headless", "numpy"],
        counts={"n_train": len(train["labels"]), "n_val": len(val["labels"])},
    )

    def work(run: tracking.ModelRun) -> None:
        tracking.log_split_inputs(run, manifest, cfg.img_size, train=train_npz, val=val_npz)
        model = fit(train["images"], train["labels"], cfg)
        val_probs = probabilities(model, val["images"])
        model["threshold"] = thresholds.youden_threshold(val["labels"], val_probs)
        model["threshold_rule"] = thresholds.RULE
        model["description"] = f"logistic regression on {cfg.pixels}x{cfg.pixels} pixels (C={cfg.C})"
        with atomic_path(model_out) as tmp:
            tmp.write_text(json.dumps(model))
        with atomic_path(val_predictions_out) as tmp:
            pd.DataFrame(
                {"patientId": val["patient_ids"], "probability": val_probs, "label": val["labels"]}
            ).to_csv(tmp, index=False)
        from sklearn.metrics import roc_auc_score

        val_acc = float(((val_probs >= model["threshold"]) == (val["labels"] == 1)).mean())
        both = len(np.unique(val["labels"])) == 2
        val_auc = roc_auc_score(val["labels"], val_probs) if both else float("nan")
        run.log_metrics({"val_acc": val_acc, "val_roc_auc": val_auc, "threshold": model["threshold"]})
        log.info("baseline: val accuracy %.4f at threshold %.4f", val_acc, model["threshold"])

    return tracking.run_tracked(
        tracking.TrackingSettings.from_config(mlflow_section),
        name="baseline",
        params=params,
        tags={**tags, "pneumoflow.head": f"logistic regression on {cfg.pixels}x{cfg.pixels} pixels"},
        fingerprint_parts=parts,
        outputs={"model.json": model_out, "val_predictions.csv": val_predictions_out},
        run_id_out=run_id_out,
        work=work,
    )
