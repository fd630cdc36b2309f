"""DICOM reading on real files written with pydicom: encodings, transforms, refusals."""

import numpy as np
import pydicom
import pytest
from conftest import gradient
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pneumoflow.formats.dicomio import (
    DicomError,
    check_dataset,
    copyable_jpeg,
    parse_age,
    read_dataset,
    to_uint8,
)


def test_jpeg_baseline_frame_is_copied_byte_for_byte(make_dicom):
    path = make_dicom(gradient(), jpeg=True)
    ds = read_dataset(path)
    frame = copyable_jpeg(ds)
    assert frame is not None
    assert frame[:2] == b"\xff\xd8" and frame[-2:] == b"\xff\xd9"
    # the copied bytes decode to the same pixels pydicom decodes
    import cv2

    decoded = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(decoded, ds.pixel_array)


def test_uncompressed_8bit_is_kept_as_stored(make_dicom):
    # (64, 48) ramp 0..255; nothing to apply, so values pass unchanged
    pixels = gradient()
    ds = read_dataset(make_dicom(pixels))
    assert copyable_jpeg(ds) is None  # not JPEG: must be encoded
    np.testing.assert_array_equal(to_uint8(ds), pixels)


def test_monochrome1_is_inverted(make_dicom):
    pixels = gradient()
    ds = read_dataset(make_dicom(pixels, PhotometricInterpretation="MONOCHROME1"))
    assert copyable_jpeg(ds) is None
    np.testing.assert_array_equal(to_uint8(ds), 255 - pixels)


def test_monochrome1_jpeg_is_not_copied(make_dicom):
    ds = read_dataset(make_dicom(gradient(), jpeg=True, PhotometricInterpretation="MONOCHROME1"))
    assert copyable_jpeg(ds) is None
    out = to_uint8(ds)
    assert out[:, 0].mean() > 240 and out[:, -1].mean() < 15  # black became white


def test_16bit_rescale_and_window(make_dicom):
    # stored 0..4000 (12-bit data in 16 bits); rescale to -1000..3000 (HU-like);
    # window center 1000 width 2000 maps -1..1999 onto black..white
    stored = gradient(8, 401, np.uint16, high=4000)
    path = make_dicom(
        stored,
        BitsStored=12,
        HighBit=11,
        RescaleSlope=1,
        RescaleIntercept=-1000,
        WindowCenter=1000,
        WindowWidth=2000,
    )
    ds = read_dataset(path)
    out = to_uint8(ds)
    assert out.dtype == np.uint8 and out.shape == (8, 401)
    values = stored[0].astype(float) - 1000
    assert out[0, values < 0].max() == 0  # below the window: black
    assert out[0, values > 2000].min() == 255  # above the window: white
    mid = np.argmin(np.abs(values - 1000))
    assert abs(int(out[0, mid]) - 128) <= 2  # window center: mid grey


def test_16bit_without_window_is_stretched(make_dicom):
    stored = gradient(4, 100, np.uint16, high=3000) + 500
    out = to_uint8(read_dataset(make_dicom(stored, BitsStored=12, HighBit=11)))
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[0].astype(int)) >= 0)  # order kept


def test_header_fields(make_dicom):
    info = check_dataset(read_dataset(make_dicom(gradient(30, 20))))
    assert (info.rows, info.cols) == (30, 20)
    assert info.view == "PA" and info.sex == "M" and info.age == 50


@pytest.mark.parametrize(
    "text, age",
    [("51", 51), ("051Y", 51), ("", None), ("abc", None), (None, None),
     ("89", 89), ("090Y", 90), ("091Y", 90), ("105", 90), ("155", 90)],  # 90 means "90 or more"
)  # fmt: skip
def test_parse_age(text, age):
    assert parse_age(text) == age


def _rewrite(path, **changes):
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path)
    return path


def test_refuses_no_pixel_data(make_dicom):
    path = _rewrite(make_dicom(gradient()), PixelData=None)
    with pytest.raises(DicomError, match="no pixel data"):
        check_dataset(read_dataset(path))


def test_refuses_colour(make_dicom):
    rgb = np.zeros((8, 8, 3), np.uint8)
    path = make_dicom(gradient(8, 8))
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = rgb.tobytes()
    ds.save_as(path)
    with pytest.raises(DicomError, match="colour"):
        check_dataset(read_dataset(path))


def test_refuses_multiframe(make_dicom):
    path = make_dicom(gradient(8, 8))
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 2
    ds.PixelData = gradient(8, 8).tobytes() * 2
    ds.save_as(path)
    with pytest.raises(DicomError, match="multi-frame"):
        check_dataset(read_dataset(path))


def test_refuses_huge_declared_size_without_allocating(make_dicom):
    path = _rewrite(make_dicom(gradient(8, 8)), Rows=60000, Columns=60000)
    with pytest.raises(DicomError, match="implausible image size"):
        check_dataset(read_dataset(path))


def test_refuses_short_pixel_data(make_dicom):
    path = _rewrite(make_dicom(gradient(8, 8)), Rows=4000, Columns=4000)
    with pytest.raises(DicomError, match="truncated pixel data"):
        check_dataset(read_dataset(path))


def test_refuses_truncated_jpeg_file(make_dicom):
    path = make_dicom(gradient(256, 256), jpeg=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 400])
    with pytest.raises(DicomError, match="truncated"):
        check_dataset(read_dataset(path))


@pytest.mark.parametrize("content", [b"", b"not a dicom at all" * 10, bytes(range(256)) * 4])
def test_refuses_garbage_files(tmp_path, content):
    path = tmp_path / "bad.dcm"
    path.write_bytes(content)
    with pytest.raises(DicomError):
        check_dataset(read_dataset(path))


def test_uncompressed_syntax_is_read(make_dicom):
    ds = read_dataset(make_dicom(gradient()))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    check_dataset(ds)


def test_refuses_other_modality(make_dicom):
    path = make_dicom(gradient(8, 8), Modality="CT")
    with pytest.raises(DicomError, match="modality 'CT'"):
        check_dataset(read_dataset(path))


@pytest.mark.parametrize(
    ("implicit_vr", "little_endian", "syntax"),
    [(True, True, ImplicitVRLittleEndian), (False, True, ExplicitVRLittleEndian),
     (False, False, ExplicitVRBigEndian)],
)  # fmt: skip
def test_file_without_file_meta_is_read(make_dicom, tmp_path, implicit_vr, little_endian, syntax):
    """Older devices write the dataset alone (no preamble, no file meta): read as pydicom reads
    it with force=True, and converted to the same pixels as the file with its header."""
    pixels = gradient(30, 20)
    whole = make_dicom(pixels)
    ds = pydicom.dcmread(whole)
    del ds.file_meta
    ds.preamble = None
    bare = tmp_path / "bare.dcm"
    pydicom.dcmwrite(bare, ds, implicit_vr=implicit_vr, little_endian=little_endian)
    assert bare.read_bytes()[128:132] != b"DICM"
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(bare)  # what read_dataset refused as unreadable before
    read = read_dataset(bare)
    assert read.file_meta.TransferSyntaxUID == syntax
    assert check_dataset(read) == check_dataset(read_dataset(whole))
    np.testing.assert_array_equal(to_uint8(read), pixels)


def test_pydicoms_header_less_test_files_are_read_and_refused_for_what_they_are():
    """pydicom's header-less RT plans parse as datasets: refused for holding no image, not as
    unreadable."""
    from pydicom.data import get_testdata_file

    for name in ("ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm"):
        ds = read_dataset(get_testdata_file(name))
        assert ds.Modality == "RTPLAN"
        with pytest.raises(DicomError, match="no pixel data"):
            check_dataset(ds)


@pytest.mark.parametrize("content", [b"patientId,Target\nx,1\n", b"\0" * 300, b"garbage, not a DICOM" * 10])
def test_bytes_that_only_force_could_read_are_still_unreadable(tmp_path, content):
    path = tmp_path / "bad.dcm"
    path.write_bytes(content)
    with pytest.raises(DicomError, match="unreadable DICOM"):
        read_dataset(path)
