"""Training of the U-Net on images + masks, read shard by shard through tf.data.

Images and masks are read from the shards' files one at a time: memory holds the shuffle
buffer, never a whole shard.
An interrupted run resumes from its last epoch (keras BackupAndRestore).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pneumoflow.core import schema
from pneumoflow.core.atomic import atomic_path
from pneumoflow.core.diskrows import DiskRows, npy_layout
from pneumoflow.models import unet

log = logging.getLogger(__name__)


_DEFAULTS = schema.defaults("models.unet")  # every default from the schema


@dataclass(frozen=True)
class UnetConfig:
    """U-Net training settings (config `models.unet`)."""

    img_size: int = _DEFAULTS["img_size"]
    epochs: int = _DEFAULTS["epochs"]
    batch_size: int = _DEFAULTS["batch_size"]
    lr: float = _DEFAULTS["lr"]
    patience: int = _DEFAULTS["patience"]
    shuffle_buffer: int = _DEFAULTS["shuffle_buffer"]
    train_on: str = _DEFAULTS["train_on"]
    augment: bool = _DEFAULTS["augment"]
    mixed_precision: bool = _DEFAULTS["mixed_precision"]
    seed: int = _DEFAULTS["seed"]

    @classmethod
    def from_config(cls, section: dict) -> UnetConfig:
        return cls(**{k: v for k, v in section.items() if k not in schema.JOB_KEYS})


def check_split(npz_paths: list[str], name: str, img_size: int, need_positive: bool) -> tuple[int, int]:
    """(images, images with an opacity) of a split; clear errors on empty, wrong size, no opacity.
    The masks are read one at a time (core.diskrows), never a shard at once."""
    paths, _, _, counts = _shard_layouts(npz_paths, img_size)  # checks sizes and types
    count = int(counts.sum())
    if count == 0:
        raise ValueError(f"the {name} split has no images; add data or change split fractions")
    masks = DiskRows([(path, "masks") for path in paths])
    try:
        positives = sum(int(masks[i].any()) for i in range(count))
    finally:
        masks.close()
    if need_positive and positives == 0:
        raise ValueError(
            f"the {name} split has no image with an opacity box: a Dice loss has nothing to learn"
        )
    return count, positives


def _shard_layouts(npz_paths: list[str], size: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(paths, [images, masks] start, [images, masks] bytes after the end, image counts): where
    in each .npz (stored uncompressed) its uint8 (N, size, size) images and masks lie, so that
    TensorFlow reads their rows in place, one image at a time. Read so, a shard needs no Python
    step: tf.data.Dataset.from_generator made every later training step ~1.5x slower on one
    thread (README, Performance: the U-Net's input)."""
    starts, after, counts = [], [], []
    for path in npz_paths:
        (image_at, image_shape, image_type), (mask_at, mask_shape, mask_type) = (
            npy_layout(path, key) for key in ("images", "masks")
        )
        if (
            image_shape != mask_shape
            or image_shape[1:] != (size, size)
            or image_type != np.uint8
            or mask_type != np.uint8
        ):
            raise ValueError(
                f"{path} holds {image_type} images {image_shape} and {mask_type} masks {mask_shape}, "
                f"not uint8 (N, {size}, {size}) as models.unet.img_size={size} needs; "
                "rebuild it with the arrays stage"
            )
        length, file_size = image_shape[0] * size * size, Path(path).stat().st_size
        starts.append([image_at, mask_at])
        after.append([file_size - image_at - length, file_size - mask_at - length])
        counts.append(image_shape[0])
    # int64: a shard's arrays can pass 2 GB (1024 px), beyond TensorFlow's default int32
    return (
        [str(p) for p in npz_paths],
        np.asarray(starts, np.int64).reshape(-1, 2),
        np.asarray(after, np.int64).reshape(-1, 2),
        np.asarray(counts, np.int64),
    )


def make_dataset(npz_paths: list[str], cfg: UnetConfig, training: bool, count: int | None = None):
    """tf.data of (image (S, S, 1) float32 in [0, 1], mask (S, S, 2) one-hot float32) batches.
    `count`: the images it yields, when known (Keras then plans its epochs instead of running
    the data dry each time)."""
    import tensorflow as tf

    size = cfg.img_size
    positives_only = training and cfg.train_on == "positives"
    columns = _shard_layouts(npz_paths, size)[:3]  # paths, starts, after: one row per shard

    def shard(path, starts, after):  # each image and mask read from the file as it is needed
        images, masks = (
            tf.data.FixedLengthRecordDataset(
                path, size * size, header_bytes=starts[i], footer_bytes=after[i]
            ).map(lambda row: tf.reshape(tf.io.decode_raw(row, tf.uint8), (size, size)))
            for i in (0, 1)
        )
        rows = tf.data.Dataset.zip(images, masks)
        if positives_only:
            # A Dice loss on a batch without any opacity rewards predicting nothing, and
            # training on all images collapses to empty masks; presence is the classifiers' job.
            rows = rows.filter(lambda image, mask: tf.reduce_any(mask > 0))
        return rows

    ds = tf.data.Dataset.from_tensor_slices(columns).flat_map(shard)
    if count is not None:
        ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    if training:
        ds = ds.shuffle(cfg.shuffle_buffer, seed=cfg.seed, reshuffle_each_iteration=True)

    def to_float(image, mask):
        image = tf.cast(image, tf.float32)[..., None] / 255.0
        mask = tf.one_hot(tf.cast(mask, tf.int32), 2)
        if training and cfg.augment:
            # small brightness/contrast jitter only: flips would put the heart on the wrong side
            image = tf.clip_by_value(tf.image.random_brightness(image, 0.1, seed=cfg.seed), 0.0, 1.0)
        return image, mask

    # no drop_remainder: every validation image counts
    return ds.map(to_float).batch(cfg.batch_size).prefetch(1)


def _configure_tensorflow(threads: int, mixed_precision: bool) -> None:
    """GPU memory growth on, optional float16 compute; CPU thread pools from the rule's threads."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    try:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        if not gpus:
            tf.config.threading.set_intra_op_parallelism_threads(max(threads, 1))
            tf.config.threading.set_inter_op_parallelism_threads(max(threads, 1))
    except RuntimeError:  # TensorFlow already started in this process (tests, notebooks)
        log.info("TensorFlow already initialised; keeping its device settings")
    if mixed_precision and gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    log.info("TensorFlow on %s", f"GPU x{len(gpus)}" if gpus else f"CPU, {threads} threads")


def fit(
    cfg: UnetConfig,
    train_npz,
    val_npz,
    *,
    model_out,
    history_out,
    tensorboard_dir,
    backup_dir,
    run,
    threads=1,
    fingerprint="",
    counts: tuple[int, int, int] | None = None,
):
    """Train; keep the best-val-loss model at `model_out`; return the history table.

    Resumes from the training state in `backup_dir` only when it was written under the same
    `fingerprint` (settings, data, code, library versions); any other state is discarded.
    `counts` is (train images, train images with an opacity, val images) as check_split
    returned them to the caller; None counts (and checks) the splits here.
    """
    import keras

    _configure_tensorflow(threads, cfg.mixed_precision)
    keras.utils.set_random_seed(cfg.seed)
    if counts is None:
        counts = (
            *check_split(train_npz, "train", cfg.img_size, need_positive=True),
            check_split(val_npz, "val", cfg.img_size, need_positive=False)[0],
        )
    n_all, n_positive, n_val = counts
    n_train = n_positive if cfg.train_on == "positives" else n_all
    model = unet.compile_unet(unet.build_unet(cfg.img_size), cfg.lr)

    class LogEpochs(keras.callbacks.Callback):
        """Each epoch's metrics to the job log and the MLflow run (Keras' own printing bypasses the log)."""

        def on_epoch_end(self, epoch, logs=None):
            metrics = _phase_names(logs or {})
            log.info("epoch %d/%d %s", epoch + 1, cfg.epochs, {k: round(v, 4) for k, v in metrics.items()})
            run.log_metrics(metrics, step=epoch)

    # Training state lives in backup_dir, outside the rule's outputs (which Snakemake deletes
    # when a job dies): the epoch backup, the best model so far and the epoch log.
    state = Path(backup_dir)
    best_path, csv_path, restore_dir = state / "best.keras", state / "history.csv", state / "restore"
    fingerprint_path = state / "fingerprint.txt"
    resuming = restore_dir.exists() and csv_path.exists() and _same_fingerprint(fingerprint_path, fingerprint)
    if restore_dir.exists() and not resuming:
        log.info("ignoring the training state in %s: it belongs to other settings, data or code", state)
    threshold = None
    if resuming:
        threshold = float(pd.read_csv(csv_path).val_loss.min())
        log.info(
            "resuming from the last epoch backup in %s (best val_loss so far %.4f)", restore_dir, threshold
        )
    else:
        shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True, exist_ok=True)
    fingerprint_path.write_text(fingerprint)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(restore_dir), delete_checkpoint=True),
        keras.callbacks.EarlyStopping(patience=cfg.patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(
            str(best_path), monitor="val_loss", save_best_only=True, initial_value_threshold=threshold
        ),
        keras.callbacks.CSVLogger(str(csv_path), append=resuming),
        keras.callbacks.TensorBoard(str(tensorboard_dir)),
        LogEpochs(),
    ]
    model.fit(
        make_dataset(train_npz, cfg, training=True, count=n_train),
        validation_data=make_dataset(val_npz, cfg, training=False, count=n_val),
        epochs=cfg.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    with atomic_path(model_out) as tmp:
        shutil.copyfile(best_path, tmp)
    history = pd.read_csv(csv_path).drop_duplicates("epoch", keep="last")
    with atomic_path(history_out) as tmp:
        history.to_csv(tmp, index=False)
    return history.rename(columns=_phase_names)


def _same_fingerprint(path: Path, fingerprint: str) -> bool:
    return path.is_file() and path.read_text() == fingerprint


def _phase_names(logs):
    """Keras names (loss, val_dice_coefficient) -> paired names (train_loss, val_dice)."""
    rename = lambda k: k.replace("dice_coefficient", "dice")  # noqa: E731
    if isinstance(logs, str):
        return logs if logs == "epoch" else rename(logs if logs.startswith("val_") else f"train_{logs}")
    return {_phase_names(k): float(v) for k, v in logs.items()}
