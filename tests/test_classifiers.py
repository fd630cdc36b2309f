"""VGG16 / ResNet101 classifiers: seed heads and linear probes, frozen parts, weight files,
training, the val-chosen threshold, resume."""

from __future__ import annotations

import logging
import pickle
import shutil

import numpy as np
import pytest
import torch
import torchvision
from conftest import RecordingRun

from pneumoflow.models import thresholds
from pneumoflow.models.classifier_inference import classifier_probs, load_classifier
from pneumoflow.models.classifiers import WeightsError, build_classifier, count_parameters
from pneumoflow.training import checkpoints
from pneumoflow.training.classifier import ClassifierConfig, fit, load_split


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """{name: path (str, as config gives it)} of state dicts saved from torchvision's own
    constructors (stand-ins for the ImageNet files)."""
    root = tmp_path_factory.mktemp("weights")
    files = {}
    for name in ("vgg16", "resnet101"):
        torch.manual_seed(0)
        files[name] = str(root / f"{name}.pth")
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
    model, kind = build_classifier(name, weight_files[name])
    assert kind == "seed" and count_parameters(model) == (trainable, frozen)
    model.eval()
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)


@pytest.mark.parametrize(
    "name, dim, frozen",
    [
        ("vgg16", 512, 14_714_688),  # the conv features' last block, pooled
        ("resnet101", 256 + 512 + 1024 + 2048, 42_500_160),  # layer1..layer4, pooled; fc dropped
    ],
)
def test_without_weights_a_linear_probe_on_the_frozen_backbone(name, dim, frozen):
    model, kind = build_classifier(name, None)
    assert kind == "probe"
    assert count_parameters(model) == (dim * 2 + 2, frozen)  # only Linear(dim, 2) trains
    assert model.head[1].in_features == dim
    model.eval()
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)


def test_weights_are_really_loaded(weight_files):
    model, _ = build_classifier("vgg16", weight_files["vgg16"])
    state = torch.load(weight_files["vgg16"], weights_only=True)
    assert torch.equal(model.features[0].weight, state["features.0.weight"])


def test_mismatched_weights_fail_naming_file_and_model(weight_files):
    with pytest.raises(WeightsError, match=r"resnet101.pth' does not match vgg16.*torchvision's vgg16"):
        build_classifier("vgg16", weight_files["resnet101"])


def test_missing_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(WeightsError, match=r"nope.pth'.*file not found.*weights: imagenet.*weights: null"):
        build_classifier("resnet101", str(tmp_path / "nope.pth"))


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
        build_classifier("vgg16", str(evil))
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


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32) uint8 noise, one image in three of class 1 with a bright blob at a random
    place; the majority class (0) is 2/3 of the images."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, (n, 32, 32), dtype=np.uint8)
    labels = (np.arange(n) % 3 == 2).astype(np.uint8)
    yy, xx = np.mgrid[:32, :32]
    for i in np.flatnonzero(labels):
        cy, cx = rng.integers(9, 23, 2)
        images[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 240
    return images, labels


def test_probe_learns_what_a_random_backbone_sees(tmp_path):
    """weights: null trains the linear probe; it beats always-normal on val, saves its head kind
    and a val-chosen threshold, and loads back to the same probabilities."""
    train, val = _blobs(40, 1), _blobs(21, 2)
    cfg = ClassifierConfig("vgg16", img_size=32, weights=None, epochs=5, batch_size=8, lr=0.01,
                           weight_decay=0.0)  # fmt: skip
    history, val_probs = fit(
        cfg, train, val, model_out=tmp_path / "m.pt", checkpoint=tmp_path / "ck.pt",
        run=RecordingRun(), fingerprint="fp",
    )  # fmt: skip
    majority = max(val[1].mean(), 1 - val[1].mean())  # 2/3
    assert history.val_acc.max() > majority
    assert val_probs.shape == (21,) and val_probs.dtype == np.float32
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert saved["arch"] == "vgg16" and saved["head"] == "probe" and saved["img_size"] == 32
    assert 0 < saved["threshold"] < 1
    assert saved["threshold"] == thresholds.youden_threshold(val[1], val_probs)
    model, info = load_classifier("vgg16", tmp_path / "m.pt")
    assert info["threshold"] == saved["threshold"] and "state_dict" not in info
    # fit ran the backbone channels-last: float noise, amplified by the standardization
    np.testing.assert_allclose(classifier_probs(model, val[0]), val_probs, atol=1e-3)


@pytest.mark.parametrize("name, head", [("vgg16", "probe"), ("resnet101", "seed")])
def test_load_classifier_rebuilds_the_saved_model_exactly(tmp_path, name, head):
    """load_classifier builds on the meta device and takes every tensor from the file: the same
    probabilities as the saved weights copied into a built model, contiguous tensors although
    training saves them channels-last, the backbone still frozen; a file that lacks a tensor
    is refused."""
    from pneumoflow.training.classifier import save_model

    torch.manual_seed(0)
    model, kind = build_classifier(name, None, head=head)
    model = model.to(memory_format=torch.channels_last)  # as fit() trains and saves it
    save_model(tmp_path / "m.pt", model, ClassifierConfig(name, img_size=32), kind, 0.4)
    copied, _ = build_classifier(name, None, head=head)
    copied.load_state_dict(model.state_dict())
    loaded, info = load_classifier(name, tmp_path / "m.pt")
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32), dtype=np.uint8)
    np.testing.assert_array_equal(classifier_probs(loaded, images), classifier_probs(copied.eval(), images))
    assert all(t.is_contiguous() and not t.is_meta for t in loaded.state_dict().values())
    assert info["head"] == head and count_parameters(loaded) == count_parameters(model)
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    saved["state_dict"].popitem()
    torch.save(saved, tmp_path / "cut.pt")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_classifier(name, tmp_path / "cut.pt")


def test_load_classifier_refuses_another_arch_and_old_files(tmp_path):
    model, kind = build_classifier("vgg16", None)
    from pneumoflow.training.classifier import save_model

    save_model(tmp_path / "m.pt", model, ClassifierConfig("vgg16", img_size=32), kind, 0.4)
    with pytest.raises(ValueError, match="holds a vgg16 classifier, not resnet101"):
        load_classifier("resnet101", tmp_path / "m.pt")
    torch.save(model.state_dict(), tmp_path / "old.pt")  # before model.pt became a dict
    with pytest.raises(ValueError, match="not a pneumoflow classifier .*retrain it"):
        load_classifier("vgg16", tmp_path / "old.pt")


def test_model_file_describes_itself_and_a_foreign_normalization_is_refused(tmp_path):
    """model.pt carries arch, head, image size, input normalization and threshold: predict and
    evaluate need no config. A file asking for another normalization is refused, not misread."""
    from pneumoflow.models import torchdata
    from pneumoflow.training.classifier import save_model

    model, kind = build_classifier("resnet101", None)
    save_model(tmp_path / "m.pt", model, ClassifierConfig("resnet101", img_size=48), kind, 0.3)
    _, info = load_classifier("resnet101", tmp_path / "m.pt")
    assert (info["arch"], info["head"], info["img_size"], info["threshold"]) == (
        "resnet101",
        "probe",
        48,
        0.3,
    )
    assert info["normalization"] == torchdata.NORMALIZATION
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    saved["normalization"] = {**saved["normalization"], "mean": (0.5, 0.5, 0.5)}
    torch.save(saved, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="trained on inputs normalized as .*retrain"):
        load_classifier("resnet101", tmp_path / "other.pt")


# --- the operating threshold: Youden's J on val -----------------------------------------------


@pytest.mark.parametrize(
    "labels, probs, expected",
    [
        # perfect separation, 0.5 inside the best interval (0.3, 0.7]: 0.5 kept
        ([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.9], 0.5),
        # perfect separation in (0.6, 0.8], away from 0.5: its midpoint
        ([0, 0, 1, 1], [0.2, 0.6, 0.8, 0.9], 0.7),
        # all scores low: the best interval (0.1, 0.2] -> 0.15
        ([0, 0, 1, 1], [0.05, 0.1, 0.2, 0.3], 0.15),
        # one class only: nothing to choose from
        ([0, 0, 0], [0.1, 0.9, 0.4], 0.5),
        ([1, 1], [0.2, 0.3], 0.5),
    ],
)
def test_youden_threshold_hand_worked(labels, probs, expected):
    got = thresholds.youden_threshold(np.array(labels), np.array(probs))
    assert got == pytest.approx(expected)


def test_youden_threshold_separates_what_it_chose_on():
    """(8,) scores with one overlap: the chosen threshold splits them as the best J does."""
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    probs = np.array([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4])
    t = thresholds.youden_threshold(labels, probs)
    # J is best (0.75) cutting above 0.25 (one positive missed) or above 0.15 (one negative
    # kept): two intervals (0.25, 0.3] and (0.15, 0.2]; neither holds 0.5, nearest is the first
    assert t == pytest.approx(0.275)


def test_short_training_lowers_the_loss(weight_files, tmp_path):
    cfg = ClassifierConfig(
        "vgg16", img_size=32, weights=weight_files["vgg16"], epochs=3, batch_size=8, lr=0.01
    )
    run = RecordingRun()
    history, val_probs = fit(
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
    assert val_probs.shape == (16,)
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert saved["head"] == "seed" and saved["threshold_rule"] == "youden_j_on_val"
    assert saved["state_dict"]["classifier.6.weight"].shape == (2, 4096)


def test_resume_continues_at_the_next_epoch(weight_files, tmp_path, caplog):
    base = dict(img_size=32, weights=weight_files["resnet101"], batch_size=8, lr=0.01)
    train, val = _toy_arrays(16, 3), _toy_arrays(8, 4)
    kwargs = dict(model_out=tmp_path / "m.pt", checkpoint=tmp_path / "ck.pt", fingerprint="same")
    first, _ = fit(ClassifierConfig("resnet101", epochs=1, **base), train, val, run=RecordingRun(), **kwargs)
    # the job was stopped after epoch 1; the rerun asks for 2 epochs with the same fingerprint
    caplog.set_level(logging.INFO)
    run = RecordingRun()
    resumed, _ = fit(ClassifierConfig("resnet101", epochs=2, **base), train, val, run=run, **kwargs)
    assert "resuming from" in caplog.text and "at epoch 2 of 2" in caplog.text
    assert list(resumed.epoch) == [0, 1]
    assert resumed.train_loss.iloc[0] == first.train_loss.iloc[0]  # epoch 0 was not redone
    assert [step for step, _ in run.logged] == [0, 1]  # the new MLflow run gets both epochs
    # another fingerprint (other settings or data) starts over
    caplog.clear()
    again, _ = fit(
        ClassifierConfig("resnet101", epochs=1, **base),
        train,
        val,
        run=RecordingRun(),
        **{**kwargs, "fingerprint": "x"},
    )
    assert "ignoring checkpoint" in caplog.text and list(again.epoch) == [0]


def test_probe_resumes_with_its_standardization(tmp_path):
    """The probe's Standardize statistics live in the checkpoint: a resumed run ends where an
    uninterrupted one does."""
    train, val = _blobs(16, 3), _blobs(8, 4)
    # one batch per epoch: a resumed run reshuffles from the seed (another order than the
    # uninterrupted run's second epoch), which must not matter here
    base = dict(img_size=32, batch_size=16, lr=0.01)
    kw = dict(run=RecordingRun(), fingerprint="fp")
    straight, _ = fit(ClassifierConfig("vgg16", epochs=2, **base), train, val,
                      model_out=tmp_path / "a.pt", checkpoint=tmp_path / "a-ck.pt", **kw)  # fmt: skip
    fit(ClassifierConfig("vgg16", epochs=1, **base), train, val,
        model_out=tmp_path / "b.pt", checkpoint=tmp_path / "b-ck.pt", **kw)  # fmt: skip
    resumed, _ = fit(ClassifierConfig("vgg16", epochs=2, **base), train, val,
                     model_out=tmp_path / "b.pt", checkpoint=tmp_path / "b-ck.pt", **kw)  # fmt: skip
    np.testing.assert_allclose(resumed.val_loss, straight.val_loss, rtol=1e-4, atol=1e-6)
    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    for key in ("head.0.mean", "head.0.std", "head.1.weight"):
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


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


@pytest.mark.parametrize(
    "name, weighted", [("vgg16", True), ("resnet101", True), ("vgg16", False), ("resnet101", False)]
)
def test_cached_features_train_the_same_model(weight_files, tmp_path, name, weighted):
    """A frozen backbone run once (cache) or every epoch gives the same history and weights,
    for the seed head and for the probe."""
    train, val = _toy_arrays(24, 5), _toy_arrays(8, 6)
    weights = weight_files[name] if weighted else None
    histories, states = {}, {}
    for cache in (True, False):
        cfg = ClassifierConfig(
            name, img_size=32, weights=weights, epochs=2, batch_size=8, lr=0.01, cache_features=cache,
        )  # fmt: skip
        out = tmp_path / f"{cache}.pt"
        histories[cache], _ = fit(
            cfg, train, val, model_out=out, checkpoint=tmp_path / f"{cache}-ck.pt", run=RecordingRun(),
            fingerprint="fp",
        )  # fmt: skip
        states[cache] = torch.load(out, weights_only=True)["state_dict"]
        for path in tmp_path.iterdir():  # VGG16 writes ~2 GB per run; keep the disk peak at one run
            path.unlink()
    cached, recomputed = histories[True], histories[False]
    assert list(cached.val_acc) == list(recomputed.val_acc)
    np.testing.assert_allclose(cached.train_loss, recomputed.train_loss, rtol=1e-4)
    np.testing.assert_allclose(cached.val_loss, recomputed.val_loss, rtol=1e-4)
    for key, value in states[False].items():
        torch.testing.assert_close(states[True][key], value, rtol=1e-4, atol=1e-5)


def test_cache_features_true_refuses_augmentation(tmp_path):
    cfg = ClassifierConfig("vgg16", img_size=32, epochs=1, cache_features=True, hflip=True)
    with pytest.raises(ValueError, match="cache_features: true needs no augmentation"):
        fit(cfg, _toy_arrays(8, 1), _toy_arrays(4, 2), model_out=tmp_path / "m.pt",
            checkpoint=tmp_path / "c.pt", run=RecordingRun(), fingerprint="fp")  # fmt: skip
    assert not (tmp_path / "m.pt").exists()


def test_killed_after_the_last_epoch_still_yields_the_model(weight_files, tmp_path):
    """All epochs done, then the job died: Snakemake deleted model.pt; the rerun trains nothing."""
    cfg = ClassifierConfig("resnet101", img_size=32, weights=weight_files["resnet101"], epochs=1, lr=0.01)
    kwargs = dict(model_out=tmp_path / "m.pt", checkpoint=tmp_path / "ck.pt", fingerprint="same")
    fit(cfg, _toy_arrays(8, 1), _toy_arrays(4, 2), run=RecordingRun(), **kwargs)
    # the frozen backbone is not checkpointed: ~1 MB instead of ResNet101's 170 MB
    assert (tmp_path / "ck.pt").stat().st_size < 5_000_000
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    (tmp_path / "m.pt").unlink()
    run = RecordingRun()
    history, _ = fit(cfg, _toy_arrays(8, 1), _toy_arrays(4, 2), run=run, **kwargs)
    assert list(history.epoch) == [0] and run.logged == [(0, run.logged[0][1])]  # re-logged, not retrained
    again = torch.load(tmp_path / "m.pt", weights_only=True)
    assert again["threshold"] == saved["threshold"]
    before, after = saved["state_dict"], again["state_dict"]
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_checkpoints_are_paced_by_what_a_write_costs(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(checkpoints.time, "perf_counter", lambda: clock[0])
    vgg16_head = 956_000_000  # fc6-fc8 and their momentum
    small = checkpoints.CheckpointPacer()
    clock[0] += 0.002  # one epoch of a toy run
    assert small.due(2_000_000)  # ResNet101's head and momentum: an estimated 5 ms write is free
    with small.writing():
        clock[0] += 0.01
    clock[0] += 0.002
    assert not small.due(2_000_000)  # paced by the measured write from now on
    assert small.due(2_000_000, last_epoch=True)  # but a cheap write ends the run on disk

    pacer = checkpoints.CheckpointPacer()
    clock[0] += 2.0  # one epoch
    assert not pacer.due(vgg16_head)  # nothing written yet: the cost is estimated from the size
    assert not pacer.due(vgg16_head, last_epoch=True)  # a large last write is paced too
    clock[0] += 22.0
    assert pacer.due(vgg16_head)  # 24 s of training: 10 estimated writes' worth
    with pacer.writing():
        clock[0] += 1.5  # the write, measured
    clock[0] += 2.0
    assert not pacer.due(vgg16_head)
    clock[0] += 13.0  # 15 s of training since the write: 10 writes' worth
    assert pacer.due(vgg16_head)
    with pacer.writing():
        clock[0] += 0.001  # a fast write: due after every epoch, whatever the size
    clock[0] += 0.5
    assert pacer.due(vgg16_head)


def test_state_bytes_counts_the_trainable_head_and_its_momentum():
    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 2))
    model[0].requires_grad_(False)  # a frozen backbone: not in the checkpoint
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    head = (10 * 2 + 2) * 4
    assert checkpoints.state_bytes(model, optimizer) == head
    model(torch.ones(1, 10)).sum().backward()
    optimizer.step()  # SGD's momentum buffers exist from the first step
    assert checkpoints.state_bytes(model, optimizer) == 2 * head


class _AutocastProbe(torch.nn.Module):
    """A 2-class linear model that records whether autocast was on in each forward."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.autocast_seen: list[bool] = []

    def forward(self, x):
        self.autocast_seen.append(torch.is_autocast_enabled(x.device.type))
        return self.linear(x)


def test_amp_is_a_no_op_on_the_cpu():
    """amp: true on the CPU: no bf16 autocast, and the settings the run cache's fingerprint
    is made of are those of amp: false."""
    from torch.utils.data import DataLoader, TensorDataset

    from pneumoflow.training.classifier import train_one_epoch

    model = _AutocastProbe()
    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.arange(8) % 2), batch_size=4)
    cfg = ClassifierConfig("vgg16", amp=True)
    cpu = torch.device("cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train_one_epoch(model, loader, torch.nn.CrossEntropyLoss(), optimizer, cpu, scaler, cfg,
                    prepare=lambda x, device: x)  # fmt: skip
    assert model.autocast_seen == [False, False]
    assert cfg.on(cpu) == ClassifierConfig("vgg16", amp=False)
    assert cfg.on(torch.device("cuda")).amp is True  # where it can take effect, it is kept
