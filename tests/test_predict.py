"""Trained models on new images: `pneumoflow predict`, the submission rule, boxes in each image's frame."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY, SquareUNet, score_cli

# PyTorch (and torchvision) before TensorFlow: with these wheels the other order crashes the
# process (a later torchvision import segfaults once Keras is loaded)
import pneumoflow.models.classifier_inference  # noqa: F401
from pneumoflow.formats.images import read_grayscale
from pneumoflow.models import metrics
from pneumoflow.models.postprocessing import PostProcess
from pneumoflow.predict import Models, predict_images

BOX = re.compile(r"^(\S+ \S+ \S+ \S+ \S+)( \S+ \S+ \S+ \S+ \S+)*$")


class Brightness(torch.nn.Module):
    """Stands in for a classifier: pneumonia logit = the image's mean ImageNet-normalized value
    (dark images about 0.15, bright ones about 0.85)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.mean((1, 2, 3))
        return torch.stack([torch.zeros_like(score), score], 1)


@pytest.mark.parametrize(("rows", "cols"), [(1024, 1024), (600, 400), (256, 512)])
def test_boxes_come_back_in_each_images_own_frame(make_dicom, rows, cols):
    path = make_dicom(np.full((rows, cols), 90, np.uint8), "odd", jpeg=True)
    table, maps = predict_images([path], Models(unet=SquareUNet()))
    (conf, x, y, w, h), *rest = metrics.parse_prediction_string(table.PredictionString[0])
    assert not rest and conf == pytest.approx(0.9)
    assert (x, y, w, h) == pytest.approx((8 * cols / 32, 4 * rows / 32, 8 * cols / 32, 8 * rows / 32))
    assert (table.rows[0], table.cols[0]) == (rows, cols) and maps["odd.dcm"].shape == (rows, cols)


@pytest.mark.parametrize(("threshold", "expected"), [(0.5, [0, 1]), (0.95, [0, 0]), (0.1, [1, 1])])
def test_classifier_calls_at_its_saved_threshold(make_dicom, threshold, expected):
    paths = [make_dicom(np.full((64, 64), v, np.uint8), pid) for v, pid in ((20, "dark"), (235, "bright"))]
    models = Models(classifiers={"vgg16": (Brightness(), 32)}, thresholds={"vgg16": threshold})
    table, maps = predict_images(paths, models)
    probs = table.vgg16_probability.to_numpy()
    assert probs[0] < 0.5 < probs[1]  # the stand-in works as documented
    assert list(table.vgg16_pneumonia) == expected
    assert "PredictionString" not in table and maps == {}


def test_boxes_are_gated_on_the_tuned_classifier(make_dicom):
    """postprocess.json's gate: an image the gate classifier calls unlikely gets no boxes; the
    others' confidences are scaled by its probability."""
    paths = [make_dicom(np.full((64, 64), v, np.uint8), pid) for v, pid in ((20, "dark"), (235, "bright"))]
    models = Models(
        unet=SquareUNet(),
        classifiers={"vgg16": (Brightness(), 32)},
        thresholds={"vgg16": 0.5},
        postprocess=PostProcess(threshold=0.5, gate=0.5),
        gate_with="vgg16",
    )
    table, _ = predict_images(paths, models)
    assert table.PredictionString[0] == ""
    ((conf, *box),) = metrics.parse_prediction_string(table.PredictionString[1])
    assert conf == pytest.approx(0.9 * table.vgg16_probability[1], abs=1e-4)
    assert box == pytest.approx([16, 8, 16, 16])  # 8..15 x 4..11 of 32 px, in the 64 px frame
    ungated, _ = predict_images(paths, Models(unet=SquareUNet()))
    assert all(ungated.PredictionString != "")


def test_saved_models_bring_their_size_and_threshold(tmp_path):
    from pneumoflow.models.classifiers import build_classifier
    from pneumoflow.training.classifier import ClassifierConfig, save_model

    model, kind = build_classifier("vgg16", None)
    (tmp_path / "vgg16").mkdir()
    save_model(tmp_path / "vgg16/model.pt", model, ClassifierConfig("vgg16", img_size=48), kind, 0.37)
    models = Models.load(tmp_path)
    assert models.names() == ["vgg16"] and models.thresholds == {"vgg16": 0.37}
    assert models.classifiers["vgg16"][1] == 48
    with pytest.raises(ValueError, match="no trained model in .*run the pipeline first"):
        Models.load(tmp_path / "vgg16")


def test_same_stem_in_two_folders_or_two_formats_keeps_each_images_own_outputs(tmp_path, monkeypatch):
    """a/scan.dcm + b/scan.dcm and x.dcm + x.png: four rows, four maps and four overlays, each
    of its own image's size (keyed by file stem, they overwrote each other)."""
    from pneumoflow import predict
    from pneumoflow.sources.synthetic import Case, write_dicom

    shapes = {"a/scan.dcm": (64, 64), "b/scan.dcm": (96, 48), "x.dcm": (40, 80), "x.png": (72, 56)}
    for name, shape in shapes.items():
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".dcm":
            write_dicom(path, np.full(shape, 90, np.uint8), Case(path.stem, "Normal"))
        else:
            cv2.imwrite(str(path), np.full(shape, 90, np.uint8))
    monkeypatch.setattr(predict.Models, "load", classmethod(lambda cls, folder: Models(unet=SquareUNet())))
    table = predict.run_predict(
        [tmp_path / "in" / name for name in ("a", "b", "x.dcm", "x.png")],
        "unused",
        tmp_path / "predictions.csv",
        tmp_path / "overlays",
    )
    assert sorted(table.image) == sorted(shapes)
    assert sorted(table.patientId) == ["scan", "scan", "x", "x"]
    for row in table.itertuples():
        assert (row.rows, row.cols) == shapes[row.image]
        ((_, x, y, w, h),) = metrics.parse_prediction_string(row.PredictionString)
        assert (x, y, w, h) == pytest.approx(
            (8 * row.cols / 32, 4 * row.rows / 32, 8 * row.cols / 32, 8 * row.rows / 32)
        )
        overlay = cv2.imread(str(tmp_path / "overlays" / f"{row.image}.png"))
        assert overlay.shape == (*shapes[row.image], 3)
    overlays = sorted(
        p.relative_to(tmp_path / "overlays").as_posix() for p in (tmp_path / "overlays").rglob("*.png")
    )
    assert overlays == sorted(f"{name}.png" for name in shapes)
    # the same files in another order and through the files themselves: the same names
    again, maps = predict_images(
        sorted((tmp_path / "in").rglob("*.*"), reverse=True), Models(unet=SquareUNet())
    )
    assert sorted(again.image) == sorted(shapes) and {k: v.shape for k, v in maps.items()} == shapes


def test_an_image_given_twice_is_refused(make_dicom):
    path = make_dicom(np.full((32, 32), 90, np.uint8), "once")
    with pytest.raises(ValueError, match="once.dcm is given twice"):
        predict_images([path, path.parent / "." / path.name], Models(unet=SquareUNet()))


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="scan.png: not a DICOM, JPG or PNG"):
        read_grayscale(bad)
    fake = tmp_path / "scan.dcm"
    fake.write_bytes(b"\0" * 300)
    with pytest.raises(ValueError, match="scan.dcm: .*DICOM"):
        read_grayscale(fake)


def _predict_cli(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pneumoflow", "predict", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _models_with_boxes(models: Path, out: Path, images: list[Path], gate: bool) -> Path:
    """A copy of the pipeline's models folder (links) whose unet/postprocess.json keeps every
    image's boxes: threshold half the lowest image maximum of the U-Net's map, no minimum area,
    and, when `gate`, VGG16 as the gate classifier (gate 0: its probability scales the
    confidences). The tiny U-Net's own tuned threshold leaves its images without boxes, and two
    empty prediction strings agree whatever the paths do."""
    from pneumoflow.formats.images import read_source
    from pneumoflow.models.unet_inference import input_size, load_unet, unet_probs

    unet = load_unet(models / "unet/model.keras")
    size = input_size(unet)
    probs = unet_probs(unet, np.stack([read_source(p).resized(size) for p in images]))
    lowest_max = float(probs.reshape(len(probs), -1).max(axis=1).min())
    tuned = json.loads((models / "unet/postprocess.json").read_text())
    tuned.update(threshold=lowest_max / 2, min_area=0.0, gate=None)
    if gate:  # gate 0 drops nothing but scales each box's confidence by VGG16's probability
        tuned.update(gate=0.0, gate_with="vgg16")
    out.mkdir(parents=True)
    for child in models.iterdir():
        if child.name != "unet":
            (out / child.name).symlink_to(child)
    (out / "unet").mkdir()
    for child in (models / "unet").iterdir():
        if child.name != "postprocess.json":
            (out / "unet" / child.name).symlink_to(child)
    (out / "unet/postprocess.json").write_text(json.dumps(tuned))
    return out


@pytest.mark.e2e
def test_predict_cli_on_dicom_jpg_and_png(tiny_run, tmp_path):
    dicoms = sorted((tiny_run / "data/synthetic/stage_2_test_images").glob("*.dcm"))[:2]
    image = read_grayscale(dicoms[0])
    cv2.imwrite(str(tmp_path / "as_png.png"), image)
    cv2.imwrite(str(tmp_path / "as_jpg.jpg"), image)
    inputs = [*dicoms, tmp_path / "as_png.png", tmp_path / "as_jpg.jpg"]
    models = _models_with_boxes(tiny_run / "results/models", tmp_path / "models", inputs, gate=False)
    out = tmp_path / "predictions.csv"
    result = _predict_cli(
        *inputs, "--models", models, "--out", out, "--overlays", tmp_path / "overlays",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.patientId) == [d.stem for d in dicoms] + ["as_png", "as_jpg"]
    for column in ("vgg16_probability", "resnet101_probability", "unet_probability"):
        assert table[column].between(0, 1).all(), column
    # the PNG holds the DICOM's full-size pixels; the DICOM's JPEG frame is decoded at reduced
    # size (at most 4 grey levels apart, see benchmarks/bench_arrays.py): the models agree closely
    # (the linear probes read 3,840 standardized features, so a few grey levels move them ~0.01)
    for column in ("vgg16_probability", "resnet101_probability", "baseline_probability", "unet_probability"):
        assert table[column][2] == pytest.approx(table[column][0], abs=0.03)
    for column in ("vgg16_pneumonia", "resnet101_pneumonia"):
        assert set(table[column]) <= {0, 1}, column
    boxes = [metrics.parse_prediction_string(s) for s in table.PredictionString]
    assert all(boxes) and all(BOX.match(s) for s in table.PredictionString)  # every image has boxes
    overlays = sorted(p.name for p in (tmp_path / "overlays").glob("*.png"))
    assert overlays == sorted(f"{s}.png" for s in table.image)
    assert cv2.imread(str(tmp_path / "overlays" / "as_png.png.png")).shape == (*image.shape, 3)


@pytest.mark.e2e
def test_predict_cli_without_models_says_what_to_do(tmp_path, sample_dir):
    dicom = next((sample_dir / "stage_2_train_images").glob("*.dcm"))
    result = _predict_cli(dicom, "--models", tmp_path)
    assert result.returncode == 1
    assert "no trained model in" in result.stderr and "run the pipeline first" in result.stderr


@pytest.mark.e2e
def test_submission_rule_covers_every_test_image(tiny_run):
    submission = pd.read_csv(tiny_run / "results/submission.csv", keep_default_na=False)
    test_ids = {p.stem for p in (tiny_run / "data/synthetic/stage_2_test_images").glob("*.dcm")}
    assert set(submission.patientId) == test_ids and len(submission) == len(test_ids)
    assert all(s == "" or BOX.match(s) for s in submission.PredictionString)


@pytest.mark.e2e
def test_submission_for_the_test_split_scores_as_evaluate(tiny_run, tmp_path):
    """The submission path (DICOM -> boxes, gate classifier on the DICOM) equals the evaluate
    rule's (arrays -> boxes, gate from the classifier's test predictions), on a setting that
    gives every test image boxes."""
    from pneumoflow.stages import evaluate
    from pneumoflow.stages.submission import write_submission

    manifest = pd.read_csv(tiny_run / "results/manifest.tsv", sep="\t", dtype={"patientId": str})
    folder = tmp_path / "test_split"
    folder.mkdir()
    for pid in manifest.patientId[manifest.split == "test"]:
        (folder / f"{pid}.dcm").symlink_to(tiny_run / f"data/synthetic/stage_2_train_images/{pid}.dcm")
    dicoms = sorted(folder.glob("*.dcm"))
    models = _models_with_boxes(tiny_run / "results/models", tmp_path / "models", dicoms, gate=True)
    tuned = json.loads((models / "unet/postprocess.json").read_text())
    gate = tuned["gate_with"]
    assert gate is not None and tuned["gate"] == 0.0  # the gate path is exercised too
    gate_model = models / gate / ("model.json" if gate == "baseline" else "model.pt")
    out = tmp_path / "submission.csv"
    write_submission(
        folder, models / "unet/model.keras", out, postprocess_json=models / "unet/postprocess.json",
        gate_with=gate, gate_model=gate_model,
    )  # fmt: skip
    results = tiny_run / "results"
    (tmp_path / "no_run_id.txt").write_text("")  # evaluated again here: nothing goes to MLflow
    size = yaml.safe_load(TINY.read_text())["models"]["unet"]["img_size"]
    expected = evaluate.run(
        model="unet", model_file=str(models / "unet/model.keras"),
        test=sorted(str(p) for p in (results / f"arrays/{size}px/test").glob("*.npz")),
        manifest=str(results / "manifest.tsv"), boxes=str(results / "boxes.tsv"),
        run_id=str(tmp_path / "no_run_id.txt"), metrics=str(tmp_path / "eval/metrics.json"),
        postprocess=str(models / "unet/postprocess.json"),
        gate=str(results / f"eval/{gate}/predictions.csv"),
    )  # fmt: skip
    ours = pd.read_csv(out, keep_default_na=False).set_index("patientId")
    evaluated = pd.read_csv(tmp_path / "eval/predictions.csv", keep_default_na=False)
    assert sorted(ours.index) == sorted(evaluated.patientId) and len(evaluated) == len(dicoms)
    n_boxes = 0
    for row in evaluated.itertuples():
        got = metrics.parse_prediction_string(ours.PredictionString[row.patientId])
        want = metrics.parse_prediction_string(row.PredictionString)
        assert want, f"{row.patientId}: no boxes, so this comparison would prove nothing"
        np.testing.assert_allclose(np.array(got).reshape(-1, 5), np.array(want).reshape(-1, 5), atol=1e-3)
        n_boxes += len(want)
    labels = tiny_run / "data/synthetic/stage_2_train_labels.csv"
    result = score_cli(out, labels)
    assert result.returncode == 0, result.stderr
    score = float(re.search(r"RSNA score (\S+)", result.stdout).group(1))
    assert score == pytest.approx(expected["rsna_score"], abs=1e-4)
    assert n_boxes >= len(dicoms)
