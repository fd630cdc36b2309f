"""dicom_to_jpg, masks and arrays on a generated sample, including a non-1024 image."""

import os
import shutil

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest

from pneumoflow.formats.arrays import build_arrays, load_arrays
from pneumoflow.formats.masks import masks_shard, write_png
from pneumoflow.sources.rsna import convert_shard, run_manifest
from pneumoflow.sources.synthetic import Case, write_dicom


@pytest.fixture
def prepared(sample_dir, tmp_path):
    """Sample + one 512x384 MONOCHROME1 16-bit DICOM with a box, after the manifest stage (1 shard)."""
    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    pixels = np.full((512, 384), 3000, np.uint16)
    pixels[100:200, 50:150] = 1000  # dark in MONOCHROME1 storage = bright opacity on display
    write_dicom(
        data / "stage_2_train_images" / "odd-size.dcm",
        pixels,
        Case("odd-size", "Lung Opacity"),
        jpeg=False,
        PhotometricInterpretation="MONOCHROME1",
        BitsStored=12,
        HighBit=11,
    )
    with open(data / "stage_2_train_labels.csv", "a") as fh:
        fh.write("odd-size,50,100,100,100,1\n")
    with open(data / "stage_2_detailed_class_info.csv", "a") as fh:
        fh.write("odd-size,Lung Opacity\n")
    out = tmp_path / "results"
    run_manifest(
        data / "stage_2_train_labels.csv",
        data / "stage_2_detailed_class_info.csv",
        data / "stage_2_train_images",
        manifest_out=out / "manifest.tsv",
        boxes_out=out / "boxes.tsv",
        rejected_out=out / "rej.tsv",
        rejected_log=out / "rej.log.tsv",
        max_rejected_fraction=0.0,
        n_shards=1,
        val_fraction=0.0,
        test_fraction=0.0,
        seed=1,
    )
    return data, out


def test_jpg_frames_are_copied_and_others_encoded(prepared):
    data, out = prepared
    counts = convert_shard(
        out / "manifest.tsv", 0, data / "stage_2_train_images", out / "jpg", out / "jrej.tsv"
    )
    assert counts == {"copied": 12, "encoded": 1, "refused": 0}
    ids = pd.read_csv(out / "manifest.tsv", sep="\t").patientId
    assert sorted(p.stem for p in (out / "jpg").glob("*.jpg")) == sorted(ids)
    # a copied file is the DICOM's frame, byte for byte
    pid = ids[0]
    ds = pydicom.dcmread(data / "stage_2_train_images" / f"{pid}.dcm")
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    assert (out / "jpg" / f"{pid}.jpg").read_bytes() == frame.rstrip(b"\x00")
    # the MONOCHROME1 image is inverted: the box region is bright
    odd = cv2.imread(str(out / "jpg" / "odd-size.jpg"), cv2.IMREAD_GRAYSCALE)
    assert odd.shape == (512, 384)
    assert odd[110:190, 60:140].mean() > 240 and odd[300:, 200:].mean() < 15


def test_dicom_broken_after_manifest_is_refused_and_shard_goes_on(prepared):
    data, out = prepared
    ids = pd.read_csv(out / "manifest.tsv", sep="\t").patientId
    (data / "stage_2_train_images" / f"{ids[1]}.dcm").write_bytes(b"garbage")
    counts = convert_shard(
        out / "manifest.tsv", 0, data / "stage_2_train_images", out / "jpg", out / "jrej.tsv"
    )
    assert counts["refused"] == 1 and counts["copied"] + counts["encoded"] == 12
    refused = pd.read_csv(out / "jrej.tsv", sep="\t")
    assert list(refused.patientId) == [ids[1]] and "unreadable DICOM" in refused.reason[0]
    assert not (out / "jpg" / f"{ids[1]}.jpg").exists()


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="the read-ahead hints are Linux-only")
def test_manifest_asks_for_each_headers_ends_ahead_and_reads_them_in_order(prepared, monkeypatch):
    """Each DICOM's first and last ENDS_BYTES are asked for (WILLNEED) before its header is read,
    at most ENDS_DEPTH + 1 ahead of the reads, and none is dropped (dicom_to_jpg reads them next).
    A labels row without its DICOM is refused and does not shift the files after it."""
    from pneumoflow.core import readahead
    from pneumoflow.sources import rsna

    data, out = prepared
    ids = list(pd.read_csv(out / "manifest.tsv", sep="\t", dtype={"patientId": str}).patientId)
    (data / "stage_2_train_images" / f"{ids[3]}.dcm").unlink()
    events: list[tuple[str, str]] = []

    def advise(path, advice, ends=0):
        assert advice == os.POSIX_FADV_WILLNEED and ends == readahead.ENDS_BYTES
        events.append(("ask", path.stem))

    read = rsna.header_info
    monkeypatch.setattr(readahead, "_advise", advise)
    monkeypatch.setattr(rsna, "header_info", lambda path: (events.append(("read", path.stem)), read(path))[1])
    monkeypatch.setattr(readahead, "ENDS_DEPTH", 4)
    manifest, _, rejections, _ = rsna.build_manifest(
        data / "stage_2_train_labels.csv",
        data / "stage_2_detailed_class_info.csv",
        data / "stage_2_train_images",
        n_shards=1,
        val_fraction=0.0,
        test_fraction=0.0,
        seed=1,
    )
    assert [r.patientId for r in rejections] == [ids[3]] and "no DICOM file" in rejections[0].reason
    assert list(manifest.patientId) == ids[:3] + ids[4:]
    kept = ids[:3] + ids[4:]
    assert [pid for kind, pid in events if kind == "read"] == kept
    for pid in kept:
        kinds = [kind for kind, p in events if p == pid]
        assert kinds[0] == "ask" and kinds.count("ask") == 1, pid
    asked, most = set(), 0
    for kind, pid in events:
        if kind == "ask":
            asked.add(pid)
        else:
            asked.discard(pid)
        most = max(most, len(asked))
    assert most == 4 + 1


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="the read-ahead hints are Linux-only")
def test_ends_are_asked_for_at_both_ends_of_each_file(tmp_path, monkeypatch):
    """read_ends_ahead asks the kernel for [0, ENDS_BYTES) and the last ENDS_BYTES of each file
    (all of a small one), and skips a missing file (its reader says what is wrong)."""
    from pneumoflow.core import readahead

    big, small = tmp_path / "big.dcm", tmp_path / "small.dcm"
    big.write_bytes(bytes(100_000))
    small.write_bytes(bytes(100))
    calls: list[tuple[int, int, int]] = []
    monkeypatch.setattr(
        os, "posix_fadvise", lambda fd, offset, length, advice: calls.append((offset, length, advice))
    )
    paths = [big, tmp_path / "missing.dcm", small]
    assert list(readahead.read_ends_ahead(paths)) == paths
    n, will = readahead.ENDS_BYTES, os.POSIX_FADV_WILLNEED
    assert calls == [(0, n, will), (100_000 - n, n, will), (0, n, will), (0, n, will)]


def test_masks_and_arrays_line_up_with_boxes(prepared):
    data, out = prepared
    convert_shard(out / "manifest.tsv", 0, data / "stage_2_train_images", out / "jpg", out / "jrej.tsv")
    assert masks_shard(out / "manifest.tsv", out / "boxes.tsv", 0, out / "masks") == 13
    mask = cv2.imread(str(out / "masks" / "odd-size.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (512, 384) and set(np.unique(mask)) == {0, 255}
    ys, xs = np.nonzero(mask)
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (50, 100, 149, 199)

    n = build_arrays(
        out / "manifest.tsv", "train", 0, 64, out / "jpg", out / "masks", out / "jrej.tsv", out / "a.npz"
    )
    arrays = load_arrays([out / "a.npz"])
    assert n == 13
    assert arrays["images"].shape == (13, 64, 64) and arrays["images"].dtype == np.uint8
    assert arrays["masks"].shape == (13, 64, 64) and set(np.unique(arrays["masks"])) == {0, 1}
    assert arrays["labels"].dtype == np.uint8 and arrays["patient_ids"].dtype.kind == "U"
    i = list(arrays["patient_ids"]).index("odd-size")
    assert arrays["labels"][i] == 1 and arrays["classes"][i] == "Lung Opacity"
    # box x 50..150 of 384 and y 100..200 of 512, scaled to 64 px: x 8.3..25, y 12.5..25
    ys, xs = np.nonzero(arrays["masks"][i])
    assert abs(xs.min() - 8) <= 1 and abs(xs.max() - 24) <= 1
    assert abs(ys.min() - 12) <= 1 and abs(ys.max() - 24) <= 1
    # the opacity in the image sits where the mask is
    image = arrays["images"][i].astype(float)
    assert image[arrays["masks"][i] == 1].mean() > image[arrays["masks"][i] == 0].mean() + 150
    # every synthetic negative has an empty mask, every positive a non-empty one
    assert all(arrays["masks"][k].any() == bool(arrays["labels"][k]) for k in range(n))


def test_refused_images_are_left_out_of_arrays(prepared):
    data, out = prepared
    ids = pd.read_csv(out / "manifest.tsv", sep="\t").patientId
    (data / "stage_2_train_images" / f"{ids[2]}.dcm").write_bytes(b"garbage")
    convert_shard(out / "manifest.tsv", 0, data / "stage_2_train_images", out / "jpg", out / "jrej.tsv")
    masks_shard(out / "manifest.tsv", out / "boxes.tsv", 0, out / "masks")
    build_arrays(
        out / "manifest.tsv", "train", 0, 32, out / "jpg", out / "masks", out / "jrej.tsv", out / "a.npz"
    )
    arrays = load_arrays([out / "a.npz"])
    assert len(arrays["images"]) == 12 and ids[2] not in set(arrays["patient_ids"])


def test_masks_without_boxes_are_the_encoded_empty_mask_and_arrays_read_only_masks_with_boxes(prepared):
    data, out = prepared
    manifest = pd.read_csv(out / "manifest.tsv", sep="\t", dtype={"patientId": str})
    convert_shard(out / "manifest.tsv", 0, data / "stage_2_train_images", out / "jpg", out / "jrej.tsv")
    masks_shard(out / "manifest.tsv", out / "boxes.tsv", 0, out / "masks")
    negative = manifest[manifest.n_boxes == 0].iloc[0]
    positive = manifest[manifest.n_boxes > 0].iloc[0]
    # an image without boxes gets the bytes write_png writes for an all-zero mask of its size
    write_png(out / "empty.png", np.zeros((int(negative.rows), int(negative.cols)), np.uint8))
    assert (out / "masks" / f"{negative.patientId}.png").read_bytes() == (out / "empty.png").read_bytes()
    # a row without boxes has an all-zero mask, so arrays does not read it ...
    (out / "masks" / f"{negative.patientId}.png").unlink()
    args = (out / "manifest.tsv", "train", 0, 32, out / "jpg", out / "masks", out / "jrej.tsv", out / "a.npz")
    build_arrays(*args)
    arrays = load_arrays([out / "a.npz"])
    i = list(arrays["patient_ids"]).index(negative.patientId)
    assert not arrays["masks"][i].any() and arrays["masks"].any()
    # ... but a positive row's mask is read, and a missing one stops the job with its path
    (out / "masks" / f"{positive.patientId}.png").unlink()
    with pytest.raises(OSError, match=f"{positive.patientId}.png"):
        build_arrays(*args)


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="the read-ahead hints are Linux-only")
def test_dicom_to_jpg_reads_ahead_and_drops_each_dicom_after_use(prepared, monkeypatch):
    """Each DICOM is asked for (WILLNEED) before it is converted and dropped from the page
    cache (DONTNEED) after, with at most DEPTH + 1 asked for and not yet dropped at a time."""
    from pneumoflow.core import readahead
    from pneumoflow.sources import rsna

    data, out = prepared
    events: list[tuple[str, str]] = []
    advice = {os.POSIX_FADV_WILLNEED: "ask", os.POSIX_FADV_DONTNEED: "drop"}
    monkeypatch.setattr(readahead, "_advise", lambda path, a, ends=0: events.append((advice[a], path.stem)))
    convert = rsna.dicom_to_jpg_bytes
    monkeypatch.setattr(
        rsna, "dicom_to_jpg_bytes", lambda path: (events.append(("convert", path.stem)), convert(path))[1]
    )
    monkeypatch.setattr(readahead, "DEPTH", 4)
    counts = convert_shard(
        out / "manifest.tsv", 0, data / "stage_2_train_images", out / "jpg", out / "jrej.tsv"
    )
    assert counts == {"copied": 12, "encoded": 1, "refused": 0}
    ids = list(pd.read_csv(out / "manifest.tsv", sep="\t").patientId)
    assert [pid for kind, pid in events if kind == "convert"] == ids
    for pid in ids:
        kinds = [kind for kind, p in events if p == pid]
        assert kinds == ["ask", "convert", "drop"], pid
    in_cache, most = set(), 0
    for kind, pid in events:
        if kind == "ask":
            in_cache.add(pid)
        elif kind == "drop":
            in_cache.discard(pid)
        most = max(most, len(in_cache))
    assert most == 4 + 1
    assert (out / "jpg" / f"{ids[-1]}.jpg").is_file()
