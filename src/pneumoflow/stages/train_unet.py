"""Rule train_unet: train the U-Net, or restore it from the MLflow run cache. The epoch loop
is pneumoflow.training.unet.fit."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from pneumoflow.core import codeclosure
from pneumoflow.core.provenance import run_tags
from pneumoflow.formats import plots
from pneumoflow.models import unet
from pneumoflow.tracking import run_cache
from pneumoflow.tracking.model_run import ModelRun
from pneumoflow.tracking.settings import TrackingSettings, exported_section
from pneumoflow.training.unet import UnetConfig, check_split, fit


def run(
    *,
    settings: str,
    train: list[str],
    val: list[str],
    manifest: str,
    model: str,
    run_id: str,
    backup_dir: str,
    split_seed: int,
    data_source: str,
    rule: str,
    threads: int = 1,
    code: str | None = None,
) -> str | None:
    """Train the U-Net with `settings` (models.unet as JSON) on the `train` and `val` array
    shards; write `model` (model.keras) and, beside it, history.csv, loss.png, dice.png and
    TensorBoard logs; the MLflow run id to `run_id`.

    `code` is the rule's code digest (default: of this module's closure); the run cache
    and the resume state in `backup_dir` are keyed by the same fingerprint.
    """
    section, tags = json.loads(settings), run_tags(rule, data_source)
    cfg = UnetConfig.from_config(section)
    unet.check_img_size(cfg.img_size)
    n_train, n_train_positive = check_split(train, "train", cfg.img_size, need_positive=True)
    n_val, _ = check_split(val, "val", cfg.img_size, need_positive=False)
    out = Path(model).parent
    outputs = {name: out / name for name in ("model.keras", "history.csv", "loss.png", "dice.png")}
    parts, params = run_cache.stage_identity(
        dataclasses.asdict(cfg),
        split_seed=split_seed,
        data_files=[*train, *val],
        manifest=manifest,
        code=code or codeclosure.code_digest(__file__),
        libraries=["tensorflow", "tensorflow-cpu", "keras", "numpy"],
        counts={"n_train": n_train, "n_train_positive": n_train_positive, "n_val": n_val},
    )

    def work(run: ModelRun) -> None:
        run_cache.log_split_inputs(run, manifest, cfg.img_size, train=train, val=val)
        history = fit(
            cfg,
            train,
            val,
            model_out=outputs["model.keras"],
            history_out=outputs["history.csv"],
            tensorboard_dir=out / "tensorboard",
            backup_dir=backup_dir,
            run=run,
            threads=threads,
            fingerprint=run_cache.fingerprint(parts),
            counts=(n_train, n_train_positive, n_val),
        )
        plots.plot_curves(history, ["loss"], outputs["loss.png"], "U-Net: Dice loss")
        plots.plot_curves(history, ["dice", "mean_iou"], outputs["dice.png"], "U-Net: Dice and mean IoU")
        best = history.loc[history.val_loss.idxmin()]
        run.log_metrics({"best_val_dice": best.val_dice, "best_epoch": best.epoch})
        _log_keras_model(run, outputs["model.keras"], cfg.img_size)

    return run_cache.run_tracked(
        TrackingSettings.from_config(exported_section()),
        name="unet",
        params=params,
        tags=tags,
        fingerprint_parts=parts,
        outputs=outputs,
        run_id_out=run_id,
        work=work,
        # finished and logged: a later run must not resume it
        on_success=lambda: shutil.rmtree(backup_dir, ignore_errors=True),
        model_output="model.keras",
    )


def _log_keras_model(run: ModelRun, model_path: Path, img_size: int) -> None:
    """Log model.keras as the run's MLflow model and register it (pneumoflow.tracking.model_files):
    the store's one copy of the model."""
    if not run.run_id:
        return
    run.ensure_reachable()
    import tensorflow as tf

    from pneumoflow.tracking import model_files as mlflow_models
    from pneumoflow.tracking.unet_pyfunc import UnetModel

    requirements = [f"tensorflow=={tf.__version__}"]
    mlflow_models.log_model(run.run_id, "unet", model_path, UnetModel(), img_size, requirements)
