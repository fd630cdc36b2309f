"""Read DICOM chest radiographs: header checks, JPEG passthrough, 8-bit conversion.

Only technical header fields leave this module (size, view, sex, age); patient
names, dates and institutions are never read into our data structures.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import SupportsFloat

import numpy as np
import pydicom
import pydicom.config
from pydicom.datadict import dictionary_has_tag
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

# What we take from a header and why we refuse a file live apart (stdlib), so that the fast path
# (dicomscan) shares them without importing pydicom.
from pneumoflow.formats.dicomheader import MAX_PIXELS, RADIOGRAPH_MODALITIES, DicomError, DicomInfo, parse_age


def read_dataset(path: str | Path) -> pydicom.Dataset:
    """Read a whole DICOM file (pixels not decoded); DicomError if it is damaged or cut short."""
    # Real RSNA headers hold values such as a bare-number PatientAge that
    # strict validation would warn about on every file.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            try:
                ds = pydicom.dcmread(path)
            except InvalidDicomError:  # no preamble and file meta: older devices write these
                ds = _read_without_file_meta(path)
        except Exception as exc:  # pydicom raises many types for damaged files
            raise DicomError(f"unreadable DICOM ({type(exc).__name__}: {exc})") from exc
    # pydicom reads a file cut short as far as it goes and only warns
    cut_short = [w for w in caught if "end of file" in str(w.message).lower()]
    if cut_short:
        raise DicomError(f"truncated DICOM file ({cut_short[0].message})")
    return ds


# the transfer syntax of a file without file meta, from how pydicom found it encoded
_ENCODINGS = {(True, True): ImplicitVRLittleEndian, (False, True): ExplicitVRLittleEndian,
              (False, False): ExplicitVRBigEndian}  # fmt: skip
# attributes of which a stored DICOM dataset has at least one
_DATASET_KEYWORDS = ("SOPClassUID", "Modality", "PixelData")


def _read_without_file_meta(path: str | Path) -> pydicom.Dataset:
    """A dataset written without preamble and file meta, read with force=True when it parses as
    one: standard tags (garbage read by force gives unknown or command-group tags), at least one
    of _DATASET_KEYWORDS. The transfer syntax it was found in goes into its file meta."""
    ds = pydicom.dcmread(path, force=True)
    public = [tag for tag in ds.keys() if not tag.is_private]
    if not any(k in ds for k in _DATASET_KEYWORDS) or not all(
        tag.group != 0 and dictionary_has_tag(tag) for tag in public
    ):
        raise InvalidDicomError("no DICOM file header, and the bytes do not parse as a DICOM dataset")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = _ENCODINGS[tuple(ds.original_encoding)]
    return ds


def check_dataset(ds: pydicom.Dataset) -> DicomInfo:
    """Validate that `ds` holds one complete grayscale frame; return its header fields.

    Raises DicomError naming the problem: no pixel data, not CR/DX, colour,
    multi-frame, absurd declared size, or pixel data shorter than the header promises.
    """
    if "PixelData" not in ds:
        raise DicomError("DICOM has no pixel data")
    modality = str(ds.get("Modality", "") or "")
    if modality and modality not in RADIOGRAPH_MODALITIES:
        raise DicomError(f"modality {modality!r} is not a radiograph; need one of {RADIOGRAPH_MODALITIES}")
    for key in ("Rows", "Columns"):
        if key not in ds:
            raise DicomError(f"DICOM header lacks {key}")
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows < 1 or cols < 1 or rows * cols > MAX_PIXELS:
        raise DicomError(f"implausible image size {rows}x{cols}")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DicomError(f"colour image (SamplesPerPixel={ds.SamplesPerPixel}); need grayscale")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise DicomError(f"multi-frame image (NumberOfFrames={ds.NumberOfFrames}); need one frame")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(f"photometric interpretation {photometric!r}; need MONOCHROME1/2")
    _check_pixel_length(ds, rows, cols)
    return DicomInfo(
        rows=rows,
        cols=cols,
        view=str(ds.get("ViewPosition", "")),
        sex=str(ds.get("PatientSex", "")),
        age=parse_age(ds.get("PatientAge")),
    )


def _check_pixel_length(ds: pydicom.Dataset, rows: int, cols: int) -> None:
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        try:
            frame = get_frame(ds.PixelData, 0, number_of_frames=1)
        except Exception as exc:
            raise DicomError(f"damaged encapsulated pixel data ({exc})") from exc
        if ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit and not _is_whole_jpeg(frame):
            raise DicomError("truncated JPEG frame (no end-of-image marker)")
        return
    expected = rows * cols * ((int(ds.get("BitsAllocated", 8)) + 7) // 8)
    if len(ds.PixelData) < expected:
        raise DicomError(f"truncated pixel data: {len(ds.PixelData)} bytes, header needs {expected}")


def _is_whole_jpeg(frame: bytes) -> bool:
    # Encapsulated fragments are padded to even length, so EOI may sit one byte early.
    return frame[:2] == b"\xff\xd8" and b"\xff\xd9" in frame[-3:]


def has_intensity_transform(ds: pydicom.Dataset) -> bool:
    """True when rescale, a VOI window or a VOI LUT must be applied to the stored values."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
    return slope != 1 or intercept != 0 or has_voi


def copyable_jpeg(ds: pydicom.Dataset) -> bytes | None:
    """The JPEG frame's bytes when they already are the display image, else None.

    That holds for an 8-bit JPEG Baseline frame in MONOCHROME2 with nothing to
    apply to the values: writing the bytes as .jpg then avoids a decode and a
    second lossy encode.
    """
    if (
        ds.file_meta.TransferSyntaxUID != JPEGBaseline8Bit
        or ds.get("PhotometricInterpretation") != "MONOCHROME2"
        or int(ds.get("BitsStored", 8)) != 8
        or has_intensity_transform(ds)
    ):
        return None
    frame = get_frame(ds.PixelData, 0, number_of_frames=1)
    return frame.rstrip(b"\x00") if frame.endswith(b"\xd9\x00") else frame


def to_uint8(ds: pydicom.Dataset) -> np.ndarray:
    """Decode the frame to a display image: (rows, cols) uint8, 0 = black.

    Applies rescale slope/intercept, then the first VOI window (or VOI LUT),
    then inverts MONOCHROME1. Without a window, values are stretched min..max,
    except 8-bit data with nothing to apply, which is kept as stored.
    """
    try:
        stored = ds.pixel_array
    except Exception as exc:
        raise DicomError(f"cannot decode pixel data ({type(exc).__name__}: {exc})") from exc
    if stored.ndim != 2:
        raise DicomError(f"decoded pixel array has shape {stored.shape}; need (rows, cols)")
    if int(ds.get("BitsStored", 8)) == 8 and not has_intensity_transform(ds):
        image = stored.astype(np.float32) / 255.0
    else:
        values = apply_modality_lut(stored, ds).astype(np.float32)
        if "WindowCenter" in ds and "WindowWidth" in ds:
            image = _window(values, _first(ds.WindowCenter), _first(ds.WindowWidth))
        else:
            if "VOILUTSequence" in ds:
                values = apply_voi_lut(values, ds).astype(np.float32)
            image = _stretch(values)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        image = 1.0 - image
    return np.rint(image * 255.0).astype(np.uint8)


def _first(value: SupportsFloat | pydicom.multival.MultiValue) -> float:
    return float(value[0]) if isinstance(value, pydicom.multival.MultiValue) else float(value)


def _window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear VOI window (DICOM PS3.3 C.11.2.1.2) mapped to [0, 1]."""
    width = max(width, 1.0)
    low = center - 0.5 - (width - 1) / 2
    return np.clip((values - low) / max(width - 1, 1.0), 0.0, 1.0)


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)
