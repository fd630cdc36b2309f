"""`data.source: imagefolder`: a generated Kermany-style tree trains and evaluates both classifiers."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TINY, snakemake

from pneumoflow.sources.imagefolder import build_manifest, image_id, list_files

CLASSES = {"NORMAL": 0, "PNEUMONIA": 1}


def make_imagefolder(root: Path, per_class: dict[str, int], seed: int = 0) -> None:
    """train|val|test/{NORMAL,PNEUMONIA}/*.jpeg of varying sizes; pneumonia images carry a bright blob.
    Some are RGB, some PNG, as in the real set."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for klass in CLASSES:
            folder = root / split / klass
            folder.mkdir(parents=True)
            for i in range(n):
                rows, cols = int(rng.integers(120, 200)), int(rng.integers(150, 260))
                image = rng.normal(90, 20, (rows, cols)).clip(0, 255).astype(np.uint8)
                if klass == "PNEUMONIA":
                    cv2.circle(image, (cols // 3, rows // 2), rows // 5, 230, -1)
                if i % 3 == 1:
                    cv2.imwrite(str(folder / f"person{i}_{klass.lower()}.png"), image)
                elif i % 3 == 2:
                    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
                    cv2.imwrite(str(folder / f"IM-{i:04d} rgb.jpeg"), rgb)
                else:
                    cv2.imwrite(str(folder / f"IM-{i:04d}.jpeg"), image)


def add_bad_files(root: Path) -> dict[str, str]:
    """Files the manifest must refuse, {name: part of the reason}."""
    (root / "train" / "NORMAL" / "notes.txt").write_text("not an image")
    (root / "train" / "PNEUMONIA" / "broken.jpeg").write_bytes(b"\xff\xd8\xff" + b"\0" * 50)
    (root / "val" / "COVID").mkdir()
    cv2.imwrite(str(root / "val" / "COVID" / "x.jpeg"), np.zeros((50, 50), np.uint8))
    return {
        "notes.txt": "not an image file",
        "broken.jpeg": "cannot be decoded",
        "x.jpeg": "class folder 'COVID'",
    }


def test_manifest_labels_from_folders_and_refuses_non_images(tmp_path):
    make_imagefolder(tmp_path, {"train": 3, "val": 1, "test": 2})
    bad = add_bad_files(tmp_path)
    manifest, rejections, n_candidates = build_manifest(tmp_path, CLASSES, n_shards=2)
    assert len(manifest) == 12 and n_candidates == 15 and manifest.patientId.is_unique
    assert (manifest.target == manifest["class"].map(CLASSES)).all()
    for _, row in manifest.iterrows():
        split, klass, _ = Path(row.source).parts
        assert (row.split, row["class"]) == (split, klass)
        image = cv2.imread(str(tmp_path / row.source), cv2.IMREAD_GRAYSCALE)
        assert (row.rows, row.cols) == image.shape
    reasons = {Path(r.source).name: r.reason for r in rejections}
    assert set(reasons) == set(bad)
    for name, reason in bad.items():
        assert reason in reasons[name]


def test_ids_are_plain_and_unique():
    a = image_id(Path("train/PNEUMONIA/person 1 (copy).jpeg"))
    b = image_id(Path("train/PNEUMONIA/person 1 (copy).png"))
    assert a != b and "/" not in a and " " not in a and a.startswith("train-PNEUMONIA-person_1")


def test_folder_without_splits_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="has none of the folders train, val, test"):
        list_files(tmp_path)


@pytest.mark.e2e
def test_imagefolder_trains_both_classifiers_end_to_end(tmp_path):
    root = tmp_path / "chest_xray"
    make_imagefolder(root, {"train": 10, "val": 3, "test": 4})
    add_bad_files(root)
    config = tmp_path / "imagefolder.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"source": "imagefolder", "imagefolder_dir": str(root)},
                "qc": {"max_rejected_fraction": 0.1},
            }
        )
    )
    workdir = tmp_path / "run"
    result = snakemake(workdir, "--configfile", str(TINY), str(config))
    assert result.returncode == 0, result.stderr[-4000:]
    results = workdir / "results"
    manifest = pd.read_csv(results / "manifest.tsv", sep="\t")
    assert len(manifest) == 34 and set(manifest.split) == {"train", "val", "test"}
    rejected = pd.read_csv(results / "qc/rejected.tsv", sep="\t")
    assert sorted(Path(s).name for s in rejected.source) == ["broken.jpeg", "notes.txt", "x.jpeg"]
    for model in ("vgg16", "resnet101"):
        metrics = json.loads((results / f"eval/{model}/metrics.json").read_text())
        assert metrics["n_test"] == 8 and 0 <= metrics["accuracy"] <= 1
    assert not (results / "models/unet").exists() and not (results / "submission.csv").exists()
    page = (results / "report/report.html").read_text()
    assert "unet: data.source is imagefolder" in page


def test_predict_sees_the_pixels_training_sees_for_a_png(tmp_path):
    """An ImageFolder PNG trains from the JPG dicom_to_jpg writes; predict on the same PNG must
    decode that JPG too, not the PNG's own (lossless) pixels."""
    from pneumoflow.formats.arrays import decode_resized
    from pneumoflow.formats.images import read_source
    from pneumoflow.sources.imagefolder import convert_shard

    root = tmp_path / "folder"
    (root / "test" / "NORMAL").mkdir(parents=True)
    rng = np.random.default_rng(0)
    image = rng.normal(90, 30, (150, 200)).clip(0, 255).astype(np.uint8)  # noise: JPEG changes it
    cv2.imwrite(str(root / "test" / "NORMAL" / "film.png"), image)
    manifest, _, _ = build_manifest(root, CLASSES, n_shards=1)
    manifest.to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    counts = convert_shard(tmp_path / "manifest.tsv", 0, root, tmp_path / "jpg", tmp_path / "refused.tsv")
    assert counts == {"copied": 0, "encoded": 1, "refused": 0}
    (trained_on,) = (tmp_path / "jpg").glob("*.jpg")
    source = read_source(root / "test" / "NORMAL" / "film.png")
    np.testing.assert_array_equal(source.image, cv2.imread(str(trained_on), cv2.IMREAD_GRAYSCALE))
    for size in (32, 64):
        np.testing.assert_array_equal(source.resized(size), decode_resized(trained_on, size, image.shape))
    assert not np.array_equal(source.image, image)  # the test can fail: JPEG really moved pixels
