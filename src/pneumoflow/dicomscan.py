"""Fast path for the common DICOM: a Part-10 file holding one 8-bit JPEG Baseline frame (RSNA's).

pydicom builds a whole Dataset for every file (about 0.4 ms for an RSNA header); the manifest
needs a dozen header values and dicom_to_jpg only the frame's bytes. `scan` walks the file's
explicit-VR little-endian elements in one buffer and returns those, or None for anything it
does not expect: another transfer syntax, no DICM preamble, a sequence or element of undefined
length, a frame in several fragments, values that do not fit their tag, a cut-short file. The
callers then go through pydicom (dicomio), which reads the file or says what is wrong, so this
module never refuses a file itself and never changes what a file becomes.

Stdlib only: a job whose files all take this path never imports pydicom.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from pneumoflow.dicomheader import MAX_PIXELS, RADIOGRAPH_MODALITIES, DicomInfo, parse_age

JPEG_BASELINE_8BIT = "1.2.840.10008.1.2.4.50"
# Explicit VR elements with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_ITEM, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD

# The header values the two stages look at, by tag.
MODALITY, PATIENT_SEX, PATIENT_AGE, VIEW = 0x00080060, 0x00100040, 0x00101010, 0x00185101
SAMPLES, PHOTOMETRIC, FRAMES, ROWS, COLUMNS = 0x00280002, 0x00280004, 0x00280008, 0x00280010, 0x00280011
BITS_STORED, WINDOW_CENTER, VOI_LUT = 0x00280101, 0x00281050, 0x00283010
INTERCEPT, SLOPE = 0x00281052, 0x00281053
_WANTED = {MODALITY, PATIENT_SEX, PATIENT_AGE, VIEW, SAMPLES, PHOTOMETRIC, FRAMES, ROWS, COLUMNS}
_WANTED |= {BITS_STORED, WINDOW_CENTER, INTERCEPT, SLOPE, VOI_LUT}


@dataclass(frozen=True)
class Scan:
    """What `scan` found: raw header values by tag (only the _WANTED ones present) and the
    JPEG frame's bytes as stored (even-length: maybe one trailing 0x00 pad)."""

    values: dict[int, bytes]
    frame: bytes

    def text(self, tag: int, default: str = "") -> str | None:
        """A string value as pydicom gives it (trailing spaces and NULs stripped); None when it
        holds several values (a backslash), which the fast path leaves to pydicom."""
        raw = self.values.get(tag)
        if raw is None:
            return default
        value = raw.decode("latin-1").rstrip(" \x00")
        return None if "\\" in value else value

    def ushort(self, tag: int, default: int) -> int | None:
        """A US value, or None when it is not exactly one."""
        raw = self.values.get(tag)
        if raw is None:
            return default
        return struct.unpack("<H", raw)[0] if len(raw) == 2 else None


def _element(data: bytes, pos: int) -> tuple[int, bytes, int, int] | None:
    """(tag, VR, length, value offset) of the explicit-VR LE element at `pos`, or None."""
    if pos + 8 > len(data):
        return None
    group, elem, vr = struct.unpack_from("<HH2s", data, pos)
    if not vr.isalpha() or not vr.isupper():
        return None
    if vr in _LONG_VRS:
        if pos + 12 > len(data):
            return None
        return (group << 16) | elem, vr, struct.unpack_from("<I", data, pos + 8)[0], pos + 12
    return (group << 16) | elem, vr, struct.unpack_from("<H", data, pos + 6)[0], pos + 8


def _single_fragment(data: bytes, pos: int) -> tuple[bytes, int] | None:
    """(the one fragment, offset after the delimiter) of encapsulated pixel data starting at
    `pos`, or None unless it is exactly: offset table item, one fragment, sequence delimiter."""
    items = []
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        tag, pos = (group << 16) | elem, pos + 8
        if tag == _SEQUENCE_END:
            return (items[1], pos) if len(items) == 2 and length == 0 else None
        if tag != _ITEM or length == _UNDEFINED or pos + length > len(data):
            return None
        items.append(data[pos : pos + length])
        pos += length
    return None


def scan(data: bytes) -> Scan | None:
    """Header values and JPEG frame of a Part-10 JPEG Baseline file's bytes, or None.

    Every element up to the end of the file must parse, after the pixel data too: a file with
    anything unexpected anywhere goes to pydicom.
    """
    if data[128:132] != b"DICM":
        return None
    pos, syntax, values, frame = 132, None, {}, None
    while pos < len(data):
        found = _element(data, pos)
        if found is None:
            return None
        tag, vr, length, start = found
        if length == _UNDEFINED:
            if tag != _PIXEL_DATA or syntax != JPEG_BASELINE_8BIT or frame is not None:
                return None
            fragment = _single_fragment(data, start)
            if fragment is None:
                return None
            frame, pos = fragment
            continue
        if start + length > len(data) or (syntax is None and tag >> 16 != 0x0002):
            return None  # cut short, or a dataset without its transfer syntax
        value = data[start : start + length]
        if tag == 0x00020010:
            syntax = value.decode("latin-1").rstrip(" \x00")
            if syntax != JPEG_BASELINE_8BIT:
                return None
        elif tag in _WANTED:
            values[tag] = value
        pos = start + length
    return None if frame is None else Scan(values, frame)


def read_scan(path: str | Path) -> Scan | None:
    """`scan` of the file at `path` (None also when it cannot be read: pydicom will say why)."""
    try:
        return scan(Path(path).read_bytes())
    except OSError:
        return None


def _is_whole_jpeg(frame: bytes) -> bool:
    # fragments are padded to even length, so EOI may sit one byte early
    return frame[:2] == b"\xff\xd8" and b"\xff\xd9" in frame[-3:]


def copyable_frame(path: str | Path) -> bytes | None:
    """The JPG that dicom_to_jpg writes for the file at `path` (its JPEG frame, pad byte
    dropped) when the fast path can tell it is dicomio.copyable_jpeg's case: MONOCHROME2, 8 bits
    stored, no rescale, no VOI window or LUT. None otherwise: use dicomio."""
    found = read_scan(path)
    if found is None or not _is_whole_jpeg(found.frame):
        return None
    try:
        slope = float(found.text(SLOPE) or 1)
        intercept = float(found.text(INTERCEPT) or 0)
    except (TypeError, ValueError):
        return None
    if (
        found.text(PHOTOMETRIC) != "MONOCHROME2"
        or found.ushort(BITS_STORED, 8) != 8
        or slope != 1
        or intercept != 0
        or WINDOW_CENTER in found.values
        or VOI_LUT in found.values
    ):
        return None
    frame = found.frame
    return frame.rstrip(b"\x00") if frame.endswith(b"\xd9\x00") else frame


def header_info(path: str | Path) -> DicomInfo | None:
    """dicomio.check_dataset's DicomInfo for the file at `path` when the fast path finds a file
    that passes every one of its checks; None for anything else (dicomio then reads the file,
    and refuses it with the reason where it is unusable)."""
    found = read_scan(path)
    if found is None or not _is_whole_jpeg(found.frame):
        return None
    rows, cols = found.ushort(ROWS, 0), found.ushort(COLUMNS, 0)
    modality, photometric = found.text(MODALITY), found.text(PHOTOMETRIC)
    view, sex, age = found.text(VIEW), found.text(PATIENT_SEX), found.text(PATIENT_AGE)
    try:
        frames = int(found.text(FRAMES) or 1)
    except (TypeError, ValueError):
        return None
    if (
        None in (modality, view, sex, age, rows, cols)
        or (modality and modality not in RADIOGRAPH_MODALITIES)
        or not (rows >= 1 and cols >= 1 and rows * cols <= MAX_PIXELS)
        or found.ushort(SAMPLES, 1) != 1
        or frames != 1
        or photometric not in ("MONOCHROME1", "MONOCHROME2")
    ):
        return None
    return DicomInfo(rows=rows, cols=cols, view=view, sex=sex, age=parse_age(age))
