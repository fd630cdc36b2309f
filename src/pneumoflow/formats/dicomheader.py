"""What the pipeline takes from a DICOM header, and the error that refuses a file.

Stdlib only: shared by the pydicom reader (dicomio) and the fast path (dicomscan), so that a job
whose files all take the fast path never imports pydicom.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Projection radiography; a CT or MR slice that lands in the folder is refused.
RADIOGRAPH_MODALITIES = ("CR", "DX")
# Refuse declared sizes above this before any pixel allocation (a 16k x 16k CR is
# already far beyond any chest radiograph).
MAX_PIXELS = 16384 * 16384


class DicomError(ValueError):
    """A DICOM that cannot be used; the message is the reason written to qc."""


@dataclass(frozen=True)
class DicomInfo:
    """Technical header fields of one usable single-frame grayscale image."""

    rows: int
    cols: int
    view: str
    sex: str
    age: int | None


# Every age of 90 or more is stored and shown as this (see parse_age).
AGE_CAP = 90


def parse_age(value: object) -> int | None:
    """PatientAge as an int: RSNA writes a bare number ('51'), DICOM a string like '051Y'.

    Ages of 90 and over come back as AGE_CAP, meaning "90 or more": under HIPAA's Safe Harbor
    rule an exact age over 89 identifies a patient.
    """
    match = re.match(r"^\s*(\d{1,3})\s*[Yy]?\s*$", str(value or ""))
    return min(int(match.group(1)), AGE_CAP) if match else None
