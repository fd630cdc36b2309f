"""The fast path gives exactly what pydicom's path gives, or steps aside (None)."""

import numpy as np
import pydicom
import pytest
from conftest import gradient

from pneumoflow.formats import dicomscan
from pneumoflow.formats.dicomio import DicomError, check_dataset, copyable_jpeg, read_dataset
from pneumoflow.formats.dicomscan import copyable_frame, header_info
from pneumoflow.formats.jpeg import dicom_to_jpg_bytes


def _pydicom_info(path):
    try:
        return check_dataset(read_dataset(path))
    except DicomError:
        return None


def test_rsna_files_take_the_fast_path_with_identical_results(sample_dir):
    paths = sorted((sample_dir / "stage_2_train_images").glob("*.dcm"))
    assert len(paths) == 12
    for path in paths:
        frame = copyable_frame(path)
        assert frame is not None and frame == copyable_jpeg(read_dataset(path))
        info = header_info(path)
        assert info is not None and info == check_dataset(read_dataset(path))


def test_a_padded_odd_length_frame_loses_its_pad_as_before(make_dicom):
    # find a JPEG of odd length: encapsulation pads it with one 0x00 that the .jpg must not keep
    for cols in range(40, 80):
        path = make_dicom(gradient(32, cols), jpeg=True)
        frame = copyable_jpeg(read_dataset(path))
        if len(frame) % 2:
            break
    assert len(frame) % 2, "no odd-length frame found"
    assert copyable_frame(path) == frame and frame.endswith(b"\xff\xd9")


@pytest.mark.parametrize(
    "jpeg, extra",
    [
        (True, {"PhotometricInterpretation": "MONOCHROME1"}),
        (True, {"RescaleIntercept": -5}),
        (True, {"RescaleSlope": 2}),
        (True, {"WindowCenter": 128, "WindowWidth": 200}),
        (True, {"Modality": "CT"}),
        (True, {"SamplesPerPixel": 3}),
        (True, {"NumberOfFrames": 2}),
        (True, {"ViewPosition": "AP\\PA"}),
        (False, {}),
    ],
)
def test_other_files_get_what_pydicom_gives_them(make_dicom, jpeg, extra):
    path = make_dicom(gradient(32, 48), jpeg=jpeg, **extra)
    fast_frame, fast_info = copyable_frame(path), header_info(path)
    ds = read_dataset(path)
    # the fast path may step aside (None) but never disagree
    assert fast_frame is None or fast_frame == copyable_jpeg(ds)
    assert fast_info is None or fast_info == _pydicom_info(path)
    if copyable_jpeg(ds) is None:
        assert fast_frame is None
    if _pydicom_info(path) is None:
        assert fast_info is None
    data, copied = dicom_to_jpg_bytes(path)
    assert copied == (copyable_jpeg(ds) is not None)


def test_files_cut_anywhere_step_aside(make_dicom):
    path = make_dicom(gradient(64, 64), jpeg=True)
    data = path.read_bytes()
    cut = path.with_name("cut.dcm")
    for end in range(0, len(data) - 1, 7):
        cut.write_bytes(data[:end])
        assert copyable_frame(cut) is None and header_info(cut) is None, end


def test_bytes_after_the_pixel_data_step_aside(make_dicom):
    path = make_dicom(gradient(64, 64), jpeg=True)
    path.write_bytes(path.read_bytes() + b"\x00garbage")
    assert copyable_frame(path) is None and header_info(path) is None


def test_a_frame_in_two_fragments_steps_aside(make_dicom):
    path = make_dicom(gradient(64, 64), jpeg=True)
    ds = pydicom.dcmread(path)
    frame = copyable_jpeg(ds)
    ds.PixelData = pydicom.encaps.encapsulate([frame], fragments_per_frame=2)
    ds.save_as(path)
    assert copyable_frame(path) is None and header_info(path) is None
    jpg, copied = dicom_to_jpg_bytes(path)
    assert copied and np.frombuffer(jpg, np.uint8)[:2].tobytes() == b"\xff\xd8"


def test_the_manifest_reads_the_header_not_the_pixels(make_dicom, monkeypatch):
    # (512, 512) noise: a JPEG of several hundred kB, far beyond the 8 kB header read
    noise = np.random.default_rng(0).integers(0, 256, (512, 512), dtype=np.uint8)
    path = make_dicom(noise, jpeg=True)
    read = []
    real_pread = dicomscan.os.pread
    monkeypatch.setattr(dicomscan.os, "pread", lambda fd, n, at: read.append(n) or real_pread(fd, n, at))
    assert header_info(path) == check_dataset(read_dataset(path))
    assert path.stat().st_size > 200_000 and sum(read) < 10_000
