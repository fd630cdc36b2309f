"""The dicom_to_jpg stage: one shard of DICOMs -> 8-bit JPGs named <patientId>.jpg."""

from __future__ import annotations

import logging
from pathlib import Path

from pneumoflow.formats.dicomheader import DicomError
from pneumoflow.formats.dicomscan import copyable_frame

log = logging.getLogger(__name__)

JPEG_QUALITY = 95


def dicom_to_jpg_bytes(path: str | Path) -> tuple[bytes | memoryview, bool]:
    """(JPG bytes, copied) for one DICOM; copied=True when the frame was passed through. The fast
    path's bytes are a view into the file's bytes (dicomscan.copyable_frame).

    Raises DicomError when the file cannot be read or decoded.
    """
    frame = copyable_frame(path)  # RSNA's files, without pydicom's parse of the whole file
    if frame is not None:
        return frame, True
    return _via_pydicom(path)


def _via_pydicom(path: str | Path) -> tuple[bytes, bool]:
    # imported here: a shard whose files all take the fast path never loads pydicom or OpenCV
    import cv2

    from pneumoflow.formats.dicomio import copyable_jpeg, read_dataset, to_uint8

    ds = read_dataset(path)
    frame = copyable_jpeg(ds)
    if frame is not None:
        return frame, True
    ok, encoded = cv2.imencode(".jpg", to_uint8(ds), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DicomError("OpenCV could not encode the decoded image as JPG")
    return encoded.tobytes(), False
