"""Any radiograph file -> the grayscale image training sees (predict and submission share it).

A DICOM becomes the JPG that dicom_to_jpg writes (header checks included), decoded to
grayscale as the arrays stage decodes it; a JPG or PNG file becomes the JPG that
dicom_to_jpg writes for an ImageFolder input (training_jpg: a PNG is re-encoded), so
training and prediction see the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from pneumoflow.formats.arrays import decode_resized
from pneumoflow.formats.dicomio import check_dataset, read_dataset
from pneumoflow.formats.jpeg import dicom_to_jpg_bytes

IMAGE_SUFFIXES = {".dcm", ".dicom", ".jpg", ".jpeg", ".png"}


def is_dicom(path: Path) -> bool:
    """DICOM by suffix or by the 'DICM' magic at byte 128."""
    if path.suffix.lower() in {".dcm", ".dicom"}:
        return True
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"


class Source(NamedTuple):
    """An input image as the arrays stage sees it: encoded bytes (a DICOM's are the JPG that
    dicom_to_jpg writes) and their full-size decode, (H, W) uint8."""

    data: bytes
    image: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape

    def resized(self, size: int) -> np.ndarray:
        """(size, size) uint8, exactly as the arrays stage makes it."""
        return decode_resized(self.data, size, self.shape)


JPEG_MAGIC = b"\xff\xd8\xff"


def training_jpg(data: bytes) -> bytes | None:
    """The JPG that training sees for a JPG or PNG file's bytes: JPEG bytes as they are; any
    other image decoded to grayscale and encoded as JPG (OpenCV's default quality, 95).
    None when the bytes do not decode."""
    if data.startswith(JPEG_MAGIC):
        return data
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        return None
    ok, encoded = cv2.imencode(".jpg", image)
    return encoded.tobytes() if ok else None


def read_source(path: str | Path) -> Source:
    """The Source of a DICOM, JPG or PNG file; ValueError naming the file if unusable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        if is_dicom(path):
            check_dataset(read_dataset(path))
            data: bytes | None = bytes(dicom_to_jpg_bytes(path)[0])
        else:
            data = training_jpg(path.read_bytes())
    except ValueError as exc:  # DicomError is a ValueError
        raise ValueError(f"{path}: {exc}") from exc
    image = None if data is None else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if data is None or image is None:
        raise ValueError(f"{path}: not a DICOM, JPG or PNG image that can be decoded")
    return Source(data, image)


def read_grayscale(path: str | Path) -> np.ndarray:
    """(H, W) uint8 grayscale of a DICOM, JPG or PNG; ValueError naming the file if unusable."""
    return read_source(path).image


def expand_images(items: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders expand to their DICOM/JPG/PNG files, sorted."""
    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths.append(item)
    if not paths:
        raise ValueError(f"no images among {[str(i) for i in items]} (expected .dcm, .jpg or .png)")
    return paths
