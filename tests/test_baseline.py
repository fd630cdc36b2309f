"""The pixel baseline: logistic regression on downsampled images, stored as plain JSON numbers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import RecordingRun
from sklearn.linear_model import LogisticRegression

from pneumoflow.models import baseline, metrics, thresholds
from pneumoflow.models.baseline import BaselineConfig
from pneumoflow.stages import train_baseline
from pneumoflow.tracking import run_cache

CFG = BaselineConfig(img_size=32, pixels=8, C=0.1)


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32) uint8 noise; label 1 (every other image) has a bright left half."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 120, (n, 32, 32), dtype=np.uint8)
    labels = (np.arange(n) % 2).astype(np.uint8)
    images[labels == 1, :, :16] += 100
    return images, labels


def test_downsample_averages_areas():
    # (1, 4, 4) uint8, four 2x2 blocks of 0, 255, 51, 102 -> (1, 4) in [0, 1]
    image = np.kron(np.array([[0, 255], [51, 102]], np.uint8), np.ones((2, 2), np.uint8))[None]
    np.testing.assert_allclose(baseline.downsample(image, 2), [[0.0, 1.0, 0.2, 0.4]], atol=1e-6)


def test_beats_chance_on_val():
    model = baseline.fit(*_toy(40, 1), CFG)
    images, labels = _toy(20, 2)
    probs = baseline.probabilities(model, images)
    assert probs.shape == (20,) and probs.dtype == np.float32
    assert ((probs >= 0.5) == labels).mean() > 0.8
    assert metrics.classification(labels, probs, 0.5)["roc_auc"] > 0.9


def test_probabilities_are_sklearns():
    train_images, train_labels = _toy(40, 1)
    model = baseline.fit(train_images, train_labels, CFG)
    x = baseline.downsample(train_images, CFG.pixels)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=CFG.C, max_iter=5000).fit((x - mean) / scale, train_labels)
    test_images, _ = _toy(12, 3)
    expected = clf.predict_proba((baseline.downsample(test_images, CFG.pixels) - mean) / scale)[:, 1]
    np.testing.assert_allclose(baseline.probabilities(model, test_images), expected, rtol=1e-5, atol=1e-6)


def test_model_is_plain_json_that_round_trips(tmp_path):
    model = baseline.fit(*_toy(40, 1), CFG)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    plain = json.loads(path.read_text())  # nothing but JSON: no pickle to trust
    assert set(plain) == {"pixels", "img_size", "C", "mean", "scale", "coef", "intercept"}
    assert len(plain["coef"]) == len(plain["mean"]) == CFG.pixels**2
    loaded = baseline.load(path)
    assert loaded == model
    images, _ = _toy(6, 4)
    np.testing.assert_array_equal(
        baseline.probabilities(loaded, images), baseline.probabilities(model, images)
    )


def test_config_ignores_job_resources_only():
    section = {"enabled": True, "threads": 1, "gpus": 0, "img_size": 64, "pixels": 16, "C": 1.0}
    assert BaselineConfig.from_config(section) == BaselineConfig(img_size=64, pixels=16, C=1.0)
    with pytest.raises(TypeError, match="pixel"):
        BaselineConfig.from_config({"pixel": 16})  # a misspelled key is not dropped


def _npz(path, images, labels):
    n = len(labels)
    np.savez(
        path,
        images=images,
        masks=np.zeros_like(images),
        labels=labels,
        classes=np.array(["Normal"] * n),
        patient_ids=np.array([f"p{i:03d}" for i in range(n)]),
    )
    return str(path)


def test_stage_writes_model_threshold_and_val_predictions(tmp_path, monkeypatch):
    """The train_baseline rule (MLflow stubbed): model.json with the val-chosen threshold, and
    val_predictions.csv whose probabilities are the model's."""
    runs = []

    def run_tracked(settings, *, work, run_id_out, **kwargs):
        runs.append(RecordingRun())
        work(runs[-1])
        return None

    monkeypatch.setattr(run_cache, "run_tracked", run_tracked)
    (tmp_path / "manifest.tsv").write_text("patientId\n")
    val_images, val_labels = _toy(20, 2)
    out = {k: str(tmp_path / k) for k in ("model.json", "val.csv", "run_id.txt")}
    train_baseline.run(
        settings=json.dumps({"enabled": True, "img_size": 32, "pixels": 8, "C": 0.1}),
        train=[_npz(tmp_path / "train.npz", *_toy(40, 1))],
        val=[_npz(tmp_path / "val.npz", val_images, val_labels)],
        manifest=str(tmp_path / "manifest.tsv"),
        model=out["model.json"],
        val_predictions=out["val.csv"],
        run_id=out["run_id.txt"],
        split_seed=0,
        data_source="synthetic",
        rule="train_baseline",
        code="test",
    )
    model = json.loads((tmp_path / "model.json").read_text())
    table = pd.read_csv(out["val.csv"])
    assert list(table.columns) == ["patientId", "probability", "label"] and len(table) == 20
    np.testing.assert_allclose(table.probability, baseline.probabilities(model, val_images), rtol=1e-6)
    assert model["threshold"] == pytest.approx(thresholds.youden_threshold(val_labels, table.probability))
    assert runs[0].datasets == [("train", "train 32px"), ("val", "val 32px")]  # MLflow dataset inputs
    assert model["threshold_rule"] == "youden_j_on_val" and "8x8 pixels" in model["description"]
    assert {"val_acc", "val_roc_auc", "threshold"} <= set(runs[0].logged[0][1])


def test_one_class_train_split_is_refused(tmp_path):
    images, _ = _toy(10, 1)
    with pytest.raises(ValueError, match="one class only"):
        train_baseline.run(
            settings="{}", train=[_npz(tmp_path / "t.npz", images, np.zeros(10, np.uint8))],
            val=[_npz(tmp_path / "v.npz", images, np.zeros(10, np.uint8))], manifest="m.tsv",
            model="m.json", val_predictions="v.csv", run_id="r.txt", split_seed=0,
            data_source="synthetic", rule="train_baseline",
        )  # fmt: skip
