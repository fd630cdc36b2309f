"""U-Net: architecture, Dice/IoU on hand-computed cases, input checks, training and resume."""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest
from conftest import RecordingRun

from pneumoflow.models.unet import build_unet, dice_coefficient, dice_loss
from pneumoflow.training.unet import UnetConfig, check_split, fit, make_dataset


@pytest.mark.parametrize("size", [64, 128])
def test_shapes_and_parameter_count(size):
    model = build_unet(size)
    assert model.input_shape == (None, size, size, 1)
    assert model.output_shape == (None, size, size, 2)
    # keras-io's oxford-pets U-Net has 2,058,979 parameters with 3 input channels and
    # 3 classes; 1 channel removes 2*3*3*32 = 576, 2 classes remove 3*3*32 + 1 = 289
    assert model.count_params() == 2_058_979 - 576 - 289


def test_size_not_divisible_by_16_is_refused():
    with pytest.raises(ValueError, match="divisible by 16"):
        build_unet(40)


def _one_hot(mask: np.ndarray) -> np.ndarray:
    """(B, H, W) {0,1} -> (B, H, W, 2) float32."""
    return np.stack([1 - mask, mask], axis=-1).astype("float32")


@pytest.mark.parametrize(
    "true, pred, dice",
    [
        # (1, 2, 2) masks: both empty -> smooth / smooth = 1
        ([[0, 0], [0, 0]], [[0, 0], [0, 0]], 1.0),
        # identical: 2*2 / (2 + 2)
        ([[1, 1], [0, 0]], [[1, 1], [0, 0]], 1.0),
        # disjoint: 0 / (2 + 2) -> ~0
        ([[1, 1], [0, 0]], [[0, 0], [1, 1]], 0.0),
        # half overlap: 2*1 / (2 + 1)
        ([[1, 1], [0, 0]], [[1, 0], [0, 0]], 2 / 3),
    ],
)
def test_dice_on_hand_computed_cases(true, pred, dice):
    t, p = _one_hot(np.array([true])), _one_hot(np.array([pred]))
    assert float(dice_coefficient(t, p)) == pytest.approx(dice, abs=1e-5)
    assert float(dice_loss(t, p)) == pytest.approx(1 - dice, abs=1e-5)


def test_mean_iou_on_hand_computed_case():
    # (1, 2, 2): foreground IoU 1/2 (1 shared of 2), background IoU 2/3 -> mean 7/12
    metric = keras.metrics.OneHotMeanIoU(num_classes=2)
    metric.update_state(_one_hot(np.array([[[1, 1], [0, 0]]])), _one_hot(np.array([[[1, 0], [0, 0]]])))
    assert float(metric.result()) == pytest.approx(7 / 12, abs=1e-5)


def _toy_split(path, n: int, seed: int, size: int = 32, positives: bool = True, every: int = 2):
    """Noise images; every `every`-th one carries a bright square and its mask."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(0, n if positives else 0, every):
        y, x = rng.integers(2, size - 16, 2)
        images[i, y : y + 14, x : x + 14] = 220
        masks[i, y : y + 14, x : x + 14] = 1
    np.savez(
        path,
        images=images,
        masks=masks,
        labels=masks.any(axis=(1, 2)).astype(np.uint8),
        classes=np.array(["x"] * n),
        patient_ids=np.array([f"p{i}" for i in range(n)]),
    )
    return str(path)


def test_split_checks(tmp_path):
    good = _toy_split(tmp_path / "a.npz", 4, 0)
    assert check_split([good], "train", 32, need_positive=True) == (4, 2)
    # positives are counted mask by mask across shards: 2 of 4 here, 150 of 300 in the second
    big = _toy_split(tmp_path / "big.npz", 300, 5)
    assert check_split([good, big], "train", 32, need_positive=True) == (304, 152)
    with pytest.raises(ValueError, match=r"not uint8 \(N, 64, 64\) as models.unet.img_size=64 needs"):
        check_split([good], "train", 64, need_positive=True)
    empty = _toy_split(tmp_path / "e.npz", 0, 0)
    with pytest.raises(ValueError, match="the train split has no images"):
        check_split([empty], "train", 32, need_positive=True)
    negative = _toy_split(tmp_path / "n.npz", 4, 0, positives=False)
    with pytest.raises(ValueError, match="no image with an opacity box"):
        check_split([negative], "train", 32, need_positive=True)


def test_training_set_keeps_positives_unless_asked(tmp_path):
    paths = [_toy_split(tmp_path / "a.npz", 6, 1)]  # images 0, 2, 4 carry an opacity
    count = lambda cfg: sum(len(b[0]) for b in make_dataset(paths, cfg, training=True))  # noqa: E731
    assert count(UnetConfig(img_size=32)) == 3
    assert count(UnetConfig(img_size=32, train_on="all")) == 6
    assert sum(len(b[0]) for b in make_dataset(paths, UnetConfig(img_size=32), training=False)) == 6


def test_dataset_scales_and_one_hots_without_dropping(tmp_path):
    # a shard without images of this split (small data) sits between two that have some
    paths = [
        _toy_split(tmp_path / n, k, s) for n, k, s in (("a.npz", 5, 1), ("e.npz", 0, 0), ("b.npz", 4, 2))
    ]
    batches = list(make_dataset(paths, UnetConfig(img_size=32, batch_size=4), training=False))
    assert [len(b[0]) for b in batches] == [4, 4, 1]  # the partial last batch is kept
    image, mask = batches[0]
    assert image.shape == (4, 32, 32, 1) and image.dtype == "float32" and float(np.max(image)) <= 1.0
    assert mask.shape == (4, 32, 32, 2) and set(np.unique(mask)) == {0.0, 1.0}
    with np.load(paths[0]) as data:
        np.testing.assert_array_equal(mask[0][..., 1].numpy(), data["masks"][0])  # pairs kept together
        np.testing.assert_allclose(image[3][..., 0].numpy(), data["images"][3] / 255.0, rtol=1e-6)
    _, second_masks = batches[1]
    with np.load(paths[2]) as data:  # row 5 overall is b.npz's row 0: shards follow in order
        np.testing.assert_array_equal(second_masks[1][..., 1].numpy(), data["masks"][0])
    with pytest.raises(ValueError, match=r"not uint8 \(N, 64, 64\) as models.unet.img_size=64 needs"):
        make_dataset(paths, UnetConfig(img_size=64), training=False)


def test_training_lowers_loss_and_beats_empty_prediction(tmp_path):
    train = [_toy_split(tmp_path / "t.npz", 64, 3, every=1)]
    val = [_toy_split(tmp_path / "v.npz", 16, 4)]
    run = RecordingRun()
    history = fit(
        UnetConfig(img_size=32, epochs=12, batch_size=8, lr=0.001, patience=12),
        train,
        val,
        model_out=tmp_path / "m.keras",
        history_out=tmp_path / "h.csv",
        tensorboard_dir=tmp_path / "tb",
        backup_dir=tmp_path / "backup",
        run=run,
    )
    assert history.train_loss.iloc[-1] < history.train_loss.iloc[0]
    # an all-background prediction scores Dice = smooth / (|mask| + smooth), about 0
    assert history.val_dice.max() > 0.2
    assert [step for step, _ in run.logged] == list(range(12))
    assert {"train_loss", "val_loss", "train_dice", "val_dice", "val_mean_iou"} <= set(run.logged[0][1])
    assert (tmp_path / "m.keras").exists() and not (tmp_path / "backup" / "restore").exists()


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt  # as a pre-empted job would stop


def test_resume_after_interruption(tmp_path, caplog, monkeypatch):
    train, val = [_toy_split(tmp_path / "t.npz", 16, 5)], [_toy_split(tmp_path / "v.npz", 8, 6)]
    kwargs = dict(
        model_out=tmp_path / "m.keras",
        history_out=tmp_path / "h.csv",
        tensorboard_dir=tmp_path / "tb",
        backup_dir=tmp_path / "backup",
    )
    cfg = UnetConfig(img_size=32, epochs=3, batch_size=8)
    real_fit = keras.Model.fit

    def interrupted_fit(self, *args, callbacks=(), **kw):
        return real_fit(self, *args, callbacks=[*callbacks, _Interrupt()], **kw)

    monkeypatch.setattr(keras.Model, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, train, val, run=RecordingRun(), **kwargs)
    monkeypatch.setattr(keras.Model, "fit", real_fit)
    assert (tmp_path / "backup" / "restore").exists()
    # Snakemake deletes a dead job's outputs before the rerun; the training state is elsewhere
    for output in ("m.keras", "h.csv"):
        (tmp_path / output).unlink(missing_ok=True)
    caplog.set_level(logging.INFO)
    run = RecordingRun()
    history = fit(cfg, train, val, run=run, **kwargs)
    assert "resuming from the last epoch backup" in caplog.text
    assert [step for step, _ in run.logged] == [1, 2]  # epoch 0 was not trained again
    assert list(history.epoch) == [0, 1, 2]  # epoch 0's row survived in the training state
    assert (tmp_path / "m.keras").exists()
