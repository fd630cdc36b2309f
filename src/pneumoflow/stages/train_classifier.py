"""Rule train_<arch> (train_vgg16, train_resnet101): train one classifier, or restore it from
the MLflow run cache. The epoch loop is pneumoflow.training.classifier.fit."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pandas as pd
import torch

from pneumoflow.core import codeclosure
from pneumoflow.core.atomic import atomic_path
from pneumoflow.core.provenance import run_tags
from pneumoflow.formats import arrays, plots
from pneumoflow.models import catalog, classifier_inference, classifiers, thresholds
from pneumoflow.tracking import run_cache
from pneumoflow.tracking.model_run import ModelRun
from pneumoflow.tracking.settings import TrackingSettings, exported_section
from pneumoflow.training.checkpoints import best_weights
from pneumoflow.training.classifier import (
    ClassifierConfig,
    describe_head,
    fit,
    load_split,
    training_device,
)

log = logging.getLogger(__name__)


def log_torch_model(run: ModelRun, name: str, model_file: Path, img_size: int) -> None:
    """Log model.pt as the run's MLflow model and register it (pneumoflow.tracking.model_files): the
    store's one copy of the weights. Requirements are pinned here, which skips MLflow's slow
    inference."""
    if not run.run_id:
        return
    run.ensure_reachable()
    import torchvision

    from pneumoflow.tracking import model_files as mlflow_models
    from pneumoflow.tracking.classifier_pyfunc import ClassifierModel

    requirements = [f"{m.__name__}=={m.__version__.split('+')[0]}" for m in (torch, torchvision)]
    mlflow_models.log_model(run.run_id, name, model_file, ClassifierModel(name), img_size, requirements)


def run(
    *,
    arch: str,
    settings: str,
    train: list[str],
    val: list[str],
    manifest: str,
    model: str,
    history: str,
    curves: str,
    val_predictions: str,
    run_id: str,
    checkpoint: str,
    split_seed: int,
    data_source: str,
    rule: str,
    threads: int = 1,
    code: str | None = None,
) -> str | None:
    """Train classifier `arch` with `settings` (models.<arch> as JSON) on the `train` and `val`
    array shards; write `model`, `history`, `curves`, `val_predictions` and the MLflow `run_id`.

    `code` is the rule's code digest (codeclosure.code_digest of its script; default: of
    this module's closure); with the settings, data and library versions it makes the one
    fingerprint that keys both the run cache and the resume `checkpoint`.

    Logs params (the stage config, split seed, image size, manifest / data /
    weights hashes, the head and the threshold), per-epoch metrics, history, curves and the
    model to MLflow; writes the val split's probabilities (patientId, probability, label).
    """
    section = json.loads(settings)
    tags = run_tags(rule, data_source)
    cfg = ClassifierConfig.from_config(arch, section).on(training_device())
    if cfg.weights is None:
        log.warning(describe_head(cfg, classifiers.PROBE_HEAD))
    else:
        classifiers.build_classifier(arch, cfg.weights)  # a bad weights file stops us before anything else
    kind = classifiers.PROBE_HEAD if cfg.weights is None else classifiers.SEED_HEAD
    tags["pneumoflow.head"] = describe_head(cfg, kind)
    tags["pneumoflow.threshold_rule"] = thresholds.RULE
    # load_split only reads its list: its list[str | Path] should be a Sequence (training/classifier.py)
    train_rows, val_rows = load_split(train, "train"), load_split(val, "val")
    weights_file = catalog.weights_file(arch, cfg.weights)
    weights_hash = run_cache.hash_files([weights_file])[:16] if weights_file else "none"
    parts, params = run_cache.stage_identity(
        dataclasses.asdict(cfg),
        split_seed=split_seed,
        data_files=[*train, *val],
        manifest=manifest,
        code=code or codeclosure.code_digest(__file__),
        libraries=["torch", "torchvision", "numpy"],
        inputs={"weights": weights_hash},
        counts={"n_train": len(train_rows[1]), "n_val": len(val_rows[1])},
    )
    fingerprint = run_cache.fingerprint(parts)

    def work(run: ModelRun) -> None:
        run_cache.log_split_inputs(run, manifest, cfg.img_size, train=train, val=val)
        trained, val_probs = fit(
            cfg,
            train_rows,
            val_rows,
            model_out=Path(model),
            checkpoint=Path(checkpoint),
            run=run,
            fingerprint=fingerprint,
            threads=threads,
        )
        with atomic_path(history) as tmp:
            trained.to_csv(tmp, index=False)
        val_ids = arrays.load_arrays(val, keys=("patient_ids",))["patient_ids"]
        with atomic_path(val_predictions) as tmp:
            table = pd.DataFrame({"patientId": val_ids, "probability": val_probs, "label": val_rows[1]})
            table.to_csv(tmp, index=False)
        plots.plot_curves(trained, ["loss", "acc"], curves, f"{arch}: learning curves")
        best = trained.loc[trained.val_acc.idxmax()]
        _, saved = classifier_inference.load_classifier(arch, model)
        run.log_metrics(
            {"best_val_acc": best.val_acc, "best_epoch": best.epoch, "threshold": saved["threshold"]}
        )
        log.info("operating threshold %.4f (%s)", saved["threshold"], saved["threshold_rule"])
        log_torch_model(run, arch, Path(model), cfg.img_size)

    def drop_training_state() -> None:  # finished and logged: a later run must not resume it
        for path in (Path(checkpoint), best_weights(Path(checkpoint))):
            path.unlink(missing_ok=True)

    outputs = {
        "model.pt": model,
        "history.csv": history,
        "curves.png": curves,
        "val_predictions.csv": val_predictions,
    }
    return run_cache.run_tracked(
        TrackingSettings.from_config(exported_section()),
        name=arch,
        params=params,
        tags=tags,
        fingerprint_parts=parts,
        outputs=outputs,
        run_id_out=run_id,
        work=work,
        on_success=drop_training_state,
        model_output="model.pt",
    )
