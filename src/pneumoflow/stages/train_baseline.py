"""Rule train_baseline: fit the pixel baseline (pneumoflow.models.baseline) on train, choose its
threshold on val, track it in MLflow."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pandas as pd

from pneumoflow.core import codeclosure
from pneumoflow.core.atomic import atomic_path
from pneumoflow.core.provenance import run_tags
from pneumoflow.formats import arrays
from pneumoflow.models import thresholds
from pneumoflow.models.baseline import BaselineConfig, fit, probabilities
from pneumoflow.tracking import run_cache
from pneumoflow.tracking.model_run import ModelRun
from pneumoflow.tracking.settings import TrackingSettings, exported_section

log = logging.getLogger(__name__)


def run(
    *,
    settings: str,
    train: list[str],
    val: list[str],
    manifest: str,
    model: str,
    val_predictions: str,
    run_id: str,
    split_seed: int,
    data_source: str,
    rule: str,
    code: str | None = None,
) -> str | None:
    """Fit the baseline with `settings` (models.baseline as JSON) on the `train` array shards,
    choose its threshold on `val`; write `model` (JSON), `val_predictions` and the MLflow
    `run_id`. `code`: the rule's code digest (default: of this module's closure)."""
    section, tags = json.loads(settings), run_tags(rule, data_source)
    cfg = BaselineConfig.from_config(section)
    train_data = arrays.load_arrays(train, keys=("images", "labels"))
    val_data = arrays.load_arrays(val, keys=("images", "labels", "patient_ids"))
    if len(np.unique(train_data["labels"])) < 2:
        raise ValueError("the train split holds one class only: the baseline has nothing to separate")
    parts, params = run_cache.stage_identity(
        dataclasses.asdict(cfg),
        split_seed=split_seed,
        data_files=[*train, *val],
        manifest=manifest,
        code=code or codeclosure.code_digest(__file__),
        libraries=["scikit-learn", "opencv-python-headless", "numpy"],
        counts={"n_train": len(train_data["labels"]), "n_val": len(val_data["labels"])},
    )

    def work(run: ModelRun) -> None:
        run_cache.log_split_inputs(run, manifest, cfg.img_size, train=train, val=val)
        fitted = fit(train_data["images"], train_data["labels"], cfg)
        val_probs = probabilities(fitted, val_data["images"])
        fitted["threshold"] = thresholds.youden_threshold(val_data["labels"], val_probs)
        fitted["threshold_rule"] = thresholds.RULE
        fitted["description"] = f"logistic regression on {cfg.pixels}x{cfg.pixels} pixels (C={cfg.C})"
        with atomic_path(model) as tmp:
            tmp.write_text(json.dumps(fitted))
        with atomic_path(val_predictions) as tmp:
            pd.DataFrame(
                {"patientId": val_data["patient_ids"], "probability": val_probs, "label": val_data["labels"]}
            ).to_csv(tmp, index=False)
        from sklearn.metrics import roc_auc_score

        val_acc = float(((val_probs >= fitted["threshold"]) == (val_data["labels"] == 1)).mean())
        both = len(np.unique(val_data["labels"])) == 2
        val_auc = roc_auc_score(val_data["labels"], val_probs) if both else float("nan")
        run.log_metrics({"val_acc": val_acc, "val_roc_auc": val_auc, "threshold": fitted["threshold"]})
        log.info("baseline: val accuracy %.4f at threshold %.4f", val_acc, fitted["threshold"])

    return run_cache.run_tracked(
        TrackingSettings.from_config(exported_section()),
        name="baseline",
        params=params,
        tags={**tags, "pneumoflow.head": f"logistic regression on {cfg.pixels}x{cfg.pixels} pixels"},
        fingerprint_parts=parts,
        outputs={"model.json": model, "val_predictions.csv": val_predictions},
        run_id_out=run_id,
        work=work,
    )
