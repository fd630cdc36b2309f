"""The manifest stage on a real generated sample with injected faults."""

import shutil

import pandas as pd
import pydicom
import pytest

from pneumoflow.sources.rsna import MANIFEST_COLUMNS, QCError, build_manifest, run_manifest

OPTIONS = dict(n_shards=4, val_fraction=0.25, test_fraction=0.25, seed=42)


@pytest.fixture
def sample(sample_dir, tmp_path):
    shutil.copytree(sample_dir, tmp_path / "data")
    return tmp_path / "data"


def _paths(sample):
    return (
        sample / "stage_2_train_labels.csv",
        sample / "stage_2_detailed_class_info.csv",
        sample / "stage_2_train_images",
    )


def test_clean_sample(sample):
    manifest, boxes, rejections, n_candidates = build_manifest(*_paths(sample), **OPTIONS)
    labels = pd.read_csv(sample / "stage_2_train_labels.csv")
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert rejections == [] and n_candidates == 12 == len(manifest)
    assert set(manifest.patientId) == set(labels.patientId)
    assert len(boxes) == labels.Target.sum()
    assert manifest.shard.between(0, 3).all()
    assert (manifest.rows == 256).all() and manifest.age.notna().all()
    assert set(manifest.split) == {"train", "val", "test"}
    for _, row in manifest.iterrows():
        assert row.n_boxes == (boxes.patientId == row.patientId).sum()


def test_max_images_keeps_the_first_patients(sample):
    manifest, *_ = build_manifest(*_paths(sample), max_images=5, **OPTIONS)
    first = pd.read_csv(sample / "stage_2_train_labels.csv").patientId.drop_duplicates()[:5]
    assert list(manifest.patientId) == list(first)


def _inject_faults(sample):
    images = sample / "stage_2_train_images"
    labels = pd.read_csv(sample / "stage_2_train_labels.csv", dtype=str, keep_default_na=False)
    ids = list(labels.patientId.drop_duplicates())
    truncated, no_pixels = images / f"{ids[0]}.dcm", images / f"{ids[1]}.dcm"
    truncated.write_bytes(truncated.read_bytes()[:2000])
    ds = pydicom.dcmread(no_pixels)
    del ds.PixelData
    ds.save_as(no_pixels)
    (images / f"{ids[2]}.dcm").unlink()  # CSV row without DICOM
    shutil.copy(images / f"{ids[3]}.dcm", images / "orphan-1.dcm")  # DICOM without CSV row
    shutil.copy(images / f"{ids[3]}.dcm", images / "a..b.dcm")  # not a plain id
    # a positive whose box reaches past the 256 px image
    positive = labels[labels.Target == "1"].patientId.iloc[-1]
    labels.loc[labels.patientId == positive, ["x", "width"]] = ["200", "100"]
    labels.to_csv(sample / "stage_2_train_labels.csv", index=False)
    return {
        ids[0]: "truncated DICOM file",
        ids[1]: "no pixel data",
        ids[2]: "no DICOM file",
        "orphan-1": "no row in the labels CSV",
        "a..b": "not a plain patientId",
        positive: "reaches outside the 256x256 image",
    }


def test_every_fault_is_refused_with_its_reason(sample):
    expected = _inject_faults(sample)
    manifest, _, rejections, n_candidates = build_manifest(*_paths(sample), **OPTIONS)
    reasons = {r.patientId: r.reason for r in rejections}
    assert set(reasons) == set(expected)
    for pid, fragment in expected.items():
        assert fragment in reasons[pid]
    assert not set(manifest.patientId) & set(expected)
    assert len(manifest) == 12 - 4 and n_candidates == 12 + 2


def test_too_many_refusals_fail_naming_count_and_file(sample, tmp_path):
    _inject_faults(sample)
    out = tmp_path / "results"
    with pytest.raises(QCError, match=r"6 of 14 images \(42.9%\) were refused.*rejected_log.tsv"):
        run_manifest(
            *_paths(sample),
            manifest_out=out / "manifest.tsv",
            boxes_out=out / "boxes.tsv",
            rejected_out=out / "rejected.tsv",
            rejected_log=tmp_path / "rejected_log.tsv",
            max_rejected_fraction=0.01,
            **OPTIONS,
        )
    assert len(pd.read_csv(tmp_path / "rejected_log.tsv", sep="\t")) == 6
    assert not (out / "manifest.tsv").exists()


def test_refusals_under_the_limit_let_the_run_go_on(sample, tmp_path):
    _inject_faults(sample)
    out = tmp_path / "results"
    manifest = run_manifest(
        *_paths(sample),
        manifest_out=out / "manifest.tsv",
        boxes_out=out / "boxes.tsv",
        rejected_out=out / "rejected.tsv",
        rejected_log=tmp_path / "log.tsv",
        max_rejected_fraction=0.5,
        **OPTIONS,
    )
    assert len(manifest) == 8
    written = pd.read_csv(out / "manifest.tsv", sep="\t")
    assert list(written.columns) == MANIFEST_COLUMNS and len(written) == 8
    assert len(pd.read_csv(out / "rejected.tsv", sep="\t")) == 6


def test_missing_dicom_folder_is_named(sample):
    labels, classes, _ = _paths(sample)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_manifest(labels, classes, sample / "nowhere", **OPTIONS)
