"""VGG16 / ResNet101 classifiers: heads, frozen parts, weight files, training, resume."""

from __future__ import annotations

import logging
import pickle
import shutil

import numpy as np
import pytest
import torch
import torchvision
from conftest import RecordingRun

from pneumoflow.classifiers import WeightsError, build_classifier, count_parameters
from pneumoflow.train_classifier import ClassifierConfig, fit, load_split


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """State dicts saved from torchvision's own constructors (stand-ins for the ImageNet files)."""
    root = tmp_path_factory.mktemp("weights")
    files = {}
    for name in ("vgg16", "resnet101"):
        torch.manual_seed(0)
        files[name] = root / f"{name}.pth"
        torch.save(getattr(torchvision.models, name)(weights=None).state_dict(), files[name])
    yield files
    shutil.rmtree(root)  # 730 MB, not needed after this module


@pytest.mark.parametrize(
    "name, trainable, frozen",
    [
        # classifier fc6 + fc7 + new fc8 (4096 -> 2); features frozen
        ("vgg16", 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 2 + 2, 14_714_688),
        # new head 2048 -> 128 -> 2; everything else frozen
        ("resnet101", 2048 * 128 + 128 + 128 * 2 + 2, 42_500_160),
    ],
)
def test_pretrained_heads_and_frozen_counts(weight_files, name, trainable, frozen):
    model, pretrained = build_classifier(name, weight_files[name])
    assert pretrained and count_parameters(model) == (trainable, frozen)
    model.eval()
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)


@pytest.mark.parametrize("name", ["vgg16", "resnet101"])
def test_without_weights_everything_trains(name):
    model, pretrained = build_classifier(name, None)
    trainable, frozen = count_parameters(model)
    assert not pretrained and frozen == 0 and trainable > 1_000_000


def test_weights_are_really_loaded(weight_files):
    model, _ = build_classifier("vgg16", weight_files["vgg16"])
    state = torch.load(weight_files["vgg16"], weights_only=True)
    assert torch.equal(model.features[0].weight, state["features.0.weight"])


def test_mismatched_weights_fail_naming_file_and_model(weight_files):
    with pytest.raises(WeightsError, match=r"resnet101.pth' does not match vgg16.*vgg16-397923af.pth"):
        build_classifier("vgg16", weight_files["resnet101"])


def test_missing_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(WeightsError, match=r"file not found.*download.pytorch.org/models"):
        build_classifier("resnet101", tmp_path / "nope.pth")


class _Payload:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_malicious_pickle_is_refused_unexecuted(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = str(marker)
    evil = tmp_path / "vgg16-397923af.pth"
    evil.write_bytes(pickle.dumps({"features.0.weight": payload}))
    with pytest.raises(WeightsError, match="not a plain PyTorch state dict"):
        build_classifier("vgg16", evil)
    assert not marker.exists()


def test_unknown_model_lists_the_choices():
    with pytest.raises(ValueError, match=r"choose one of \['resnet101', 'vgg16'\]"):
        build_classifier("alexnet", None)


def _toy_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32) uint8 noise; label 1 images carry a bright square (a learnable signal)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 80, (n, 32, 32), dtype=np.uint8)
    labels = (np.arange(n) % 2).astype(np.uint8)
    images[labels == 1, 8:24, 8:24] = 230
    return images, labels


def test_short_training_lowers_the_loss(weight_files, tmp_path):
    cfg = ClassifierConfig(
        "vgg16", img_size=32, weights=str(weight_files["vgg16"]), epochs=3, batch_size=8, lr=0.01
    )
    run = RecordingRun()
    history = fit(
        cfg,
        _toy_arrays(32, 1),
        _toy_arrays(16, 2),
        model_out=tmp_path / "m.pt",
        checkpoint=tmp_path / "ck.pt",
        run=run,
        fingerprint="fp",
    )
    assert list(history.epoch) == [0, 1, 2]
    assert history.train_loss.iloc[-1] < history.train_loss.iloc[0]
    assert history.val_loss.iloc[-1] < history.val_loss.iloc[0]  # it generalises, not only memorises
    assert [step for step, _ in run.logged] == [0, 1, 2] and "val_acc" in run.logged[0][1]
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert saved["classifier.6.weight"].shape == (2, 4096)


def test_resume_continues_at_the_next_epoch(weight_files, tmp_path, caplog):
    base = dict(img_size=32, weights=str(weight_files["resnet101"]), batch_size=8, lr=0.01)
    train, val = _toy_arrays(16, 3), _toy_arrays(8, 4)
    kwargs = dict(model_out=tmp_path / "m.pt", checkpoint=tmp_path / "ck.pt", fingerprint="same")
    first = fit(ClassifierConfig("resnet101", epochs=1, **base), train, val, run=RecordingRun(), **kwargs)
    # the job was stopped after epoch 1; the rerun asks for 2 epochs with the same fingerprint
    caplog.set_level(logging.INFO)
    run = RecordingRun()
    resumed = fit(ClassifierConfig("resnet101", epochs=2, **base), train, val, run=run, **kwargs)
    assert "resuming from" in caplog.text and "at epoch 2 of 2" in caplog.text
    assert list(resumed.epoch) == [0, 1]
    assert resumed.train_loss.iloc[0] == first.train_loss.iloc[0]  # epoch 0 was not redone
    assert [step for step, _ in run.logged] == [0, 1]  # the new MLflow run gets both epochs
    # another fingerprint (other settings or data) starts over
    caplog.clear()
    again = fit(
        ClassifierConfig("resnet101", epochs=1, **base),
        train,
        val,
        run=RecordingRun(),
        **{**kwargs, "fingerprint": "x"},
    )
    assert "ignoring checkpoint" in caplog.text and list(again.epoch) == [0]


def test_empty_split_is_refused(tmp_path):
    np.savez(
        tmp_path / "e.npz",
        images=np.zeros((0, 8, 8), np.uint8),
        masks=np.zeros((0, 8, 8), np.uint8),
        labels=np.zeros(0, np.uint8),
        classes=np.zeros(0, "<U4"),
        patient_ids=np.zeros(0, "<U4"),
    )
    with pytest.raises(ValueError, match="the train split has no images"):
        load_split([tmp_path / "e.npz"], "train")


@pytest.mark.parametrize("name", ["vgg16", "resnet101"])
def test_cached_features_train_the_same_model(weight_files, tmp_path, name):
    """A frozen backbone run once (cache) or every epoch gives the same history and weights."""
    train, val = _toy_arrays(24, 5), _toy_arrays(8, 6)
    histories, weights = {}, {}
    for cache in (True, False):
        cfg = ClassifierConfig(
            name, img_size=32, weights=str(weight_files[name]), epochs=2, batch_size=8, lr=0.01,
            cache_features=cache,
        )  # fmt: skip
        out = tmp_path / f"{cache}.pt"
        histories[cache] = fit(
            cfg, train, val, model_out=out, checkpoint=tmp_path / f"{cache}-ck.pt", run=RecordingRun(),
            fingerprint="fp",
        )  # fmt: skip
        weights[cache] = torch.load(out, weights_only=True)
        for path in tmp_path.iterdir():  # VGG16 writes ~2 GB per run; keep the disk peak at one run
            path.unlink()
    cached, recomputed = histories[True], histories[False]
    assert list(cached.val_acc) == list(recomputed.val_acc)
    np.testing.assert_allclose(cached.train_loss, recomputed.train_loss, rtol=1e-4)
    np.testing.assert_allclose(cached.val_loss, recomputed.val_loss, rtol=1e-4)
    for key, value in weights[False].items():
        torch.testing.assert_close(weights[True][key], value, rtol=1e-4, atol=1e-5)


def test_cache_features_true_needs_a_frozen_backbone(tmp_path):
    cfg = ClassifierConfig("vgg16", img_size=32, epochs=1, cache_features=True)
    with pytest.raises(ValueError, match="cache_features: true needs a frozen backbone"):
        fit(cfg, _toy_arrays(8, 1), _toy_arrays(4, 2), model_out=tmp_path / "m.pt",
            checkpoint=tmp_path / "c.pt", run=RecordingRun(), fingerprint="fp")  # fmt: skip


def test_killed_after_the_last_epoch_still_yields_the_model(weight_files, tmp_path):
    """All epochs done, then the job died: Snakemake deleted model.pt; the rerun trains nothing."""
    cfg = ClassifierConfig(
        "resnet101", img_size=32, weights=str(weight_files["resnet101"]), epochs=1, lr=0.01
    )
    kwargs = dict(model_out=tmp_path / "m.pt", checkpoint=tmp_path / "ck.pt", fingerprint="same")
    fit(cfg, _toy_arrays(8, 1), _toy_arrays(4, 2), run=RecordingRun(), **kwargs)
    # the frozen backbone is not checkpointed: ~1 MB instead of ResNet101's 170 MB
    assert (tmp_path / "ck.pt").stat().st_size < 5_000_000
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    (tmp_path / "m.pt").unlink()
    run = RecordingRun()
    history = fit(cfg, _toy_arrays(8, 1), _toy_arrays(4, 2), run=run, **kwargs)
    assert list(history.epoch) == [0] and run.logged == [(0, run.logged[0][1])]  # re-logged, not retrained
    again = torch.load(tmp_path / "m.pt", weights_only=True)
    assert again.keys() == saved.keys() and all(torch.equal(again[k], saved[k]) for k in saved)
