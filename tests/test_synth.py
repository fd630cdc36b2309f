"""The synthetic sample: RSNA layout and encoding, learnable opacities, determinism."""

import numpy as np
import pandas as pd
import pydicom

from pneumoflow.sources.synthetic import CLASSES, draw_chest, generate


def test_layout_and_dicom_encoding(tmp_path):
    cases = generate(tmp_path, n=6, seed=1)  # default 1024 px
    labels = pd.read_csv(tmp_path / "stage_2_train_labels.csv")
    classes = pd.read_csv(tmp_path / "stage_2_detailed_class_info.csv")
    assert list(labels.columns) == ["patientId", "x", "y", "width", "height", "Target"]
    assert list(classes.columns) == ["patientId", "class"]
    assert len(labels) == len(classes)  # one class row per label row, as in RSNA
    assert set(classes["class"]) == set(CLASSES)
    assert len(list((tmp_path / "stage_2_train_images").glob("*.dcm"))) == 6
    assert len(list((tmp_path / "stage_2_test_images").glob("*.dcm"))) == 3
    ds = pydicom.dcmread(tmp_path / "stage_2_train_images" / f"{cases[0].patient_id}.dcm")
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert (ds.Rows, ds.Columns, ds.BitsStored, ds.SamplesPerPixel) == (1024, 1024, 8, 1)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.Modality == "CR"
    assert ds.ViewPosition in ("PA", "AP") and ds.PatientSex in ("M", "F")
    assert ds.PatientAge.isdigit()  # a bare number, as in RSNA
    assert ds.PatientID == cases[0].patient_id and str(ds.PatientName).startswith("Fakename^")
    assert ds.pixel_array.shape == (1024, 1024)


def test_positives_carry_one_to_four_boxes(tmp_path):
    generate(tmp_path, n=40, seed=2, size=128)
    labels = pd.read_csv(tmp_path / "stage_2_train_labels.csv")
    positives = labels[labels.Target == 1]
    counts = positives.groupby("patientId").size()
    assert counts.between(1, 4).all() and len(counts) >= 5
    assert labels[labels.Target == 0][["x", "y", "width", "height"]].isna().all().all()
    assert ((positives.x + positives.width) <= 128).all() and ((positives.y + positives.height) <= 128).all()


def test_opacity_is_visible_inside_its_boxes():
    # same rng state: identical anatomy, the positive adds opacities (and noise differs)
    positive, boxes = draw_chest(np.random.default_rng(5), 512, "Lung Opacity")
    normal, none = draw_chest(np.random.default_rng(5), 512, "Normal")
    assert none == [] and 1 <= len(boxes) <= 4
    inside = np.zeros(positive.shape, bool)
    for x, y, w, h in boxes:
        inside[y : y + h, x : x + w] = True
    diff = positive.astype(float) - normal.astype(float)
    assert diff[inside].mean() > 20  # grey levels brighter inside the boxes
    assert abs(diff[~inside].mean()) < 2  # and unchanged elsewhere


def test_same_seed_same_bytes(tmp_path):
    generate(tmp_path / "a", n=4, seed=9, size=64)
    generate(tmp_path / "b", n=4, seed=9, size=64)
    generate(tmp_path / "c", n=4, seed=10, size=64)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 9
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    labels = "stage_2_train_labels.csv"
    assert (tmp_path / "a" / labels).read_bytes() != (tmp_path / "c" / labels).read_bytes()


def test_parallel_generation_writes_the_same_bytes(tmp_path):
    serial = generate(tmp_path / "one", n=6, seed=9, size=64)
    parallel = generate(tmp_path / "two", n=6, seed=9, size=64, workers=2)
    assert serial == parallel
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.*"))
    assert len(files) == 6 + 3 + 2
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()
