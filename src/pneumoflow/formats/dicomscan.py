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

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from pneumoflow.core.readahead import ENDS_BYTES
from pneumoflow.formats.dicomheader import MAX_PIXELS, RADIOGRAPH_MODALITIES, DicomInfo, parse_age

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
    """What `scan` found: raw header values by tag (only the _WANTED ones present) and where the
    JPEG frame lies in the file's buffer, [start, end) as stored (even length: maybe one
    trailing 0x00 pad)."""

    values: dict[int, bytes]
    data: bytes | _FileBytes
    frame_at: tuple[int, int]

    def whole_jpeg(self) -> bool:
        """The frame starts with SOI and ends with EOI (fragments are padded to even length, so
        EOI may sit one byte early). Reads 5 bytes of the frame, not all of it."""
        start, end = self.frame_at
        head, tail = self.data[start : start + 2], self.data[max(start, end - 3) : end]
        return head == b"\xff\xd8" and b"\xff\xd9" in tail

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


_TAG_VR, _U16, _U32, _ITEM_HEADER = (struct.Struct(f) for f in ("<HH2s", "<H", "<I", "<HHI"))


def _unpack(layout: struct.Struct, data: bytes | _FileBytes, pos: int) -> tuple:
    return layout.unpack(data[pos : pos + layout.size])


def _element(data: bytes | _FileBytes, pos: int) -> tuple[int, bytes, int, int] | None:
    """(tag, VR, length, value offset) of the explicit-VR LE element at `pos`, or None."""
    head = data[pos : pos + 12]  # one slice per element: the long form's 12 bytes at most
    if len(head) < 8:
        return None
    group, elem, vr = _TAG_VR.unpack_from(head)
    if not vr.isalpha() or not vr.isupper():
        return None
    if vr in _LONG_VRS:
        if len(head) < 12:
            return None
        return (group << 16) | elem, vr, _U32.unpack_from(head, 8)[0], pos + 12
    return (group << 16) | elem, vr, _U16.unpack_from(head, 6)[0], pos + 8


def _single_fragment(data: bytes | _FileBytes, pos: int) -> tuple[tuple[int, int], int] | None:
    """([start, end) of the one fragment, offset after the delimiter) of encapsulated pixel data
    starting at `pos`, or None unless it is exactly: offset table item, one fragment, sequence
    delimiter."""
    items: list[tuple[int, int]] = []
    while pos + 8 <= len(data):
        group, elem, length = _unpack(_ITEM_HEADER, data, pos)
        tag, pos = (group << 16) | elem, pos + 8
        if tag == _SEQUENCE_END:
            return (items[1], pos) if len(items) == 2 and length == 0 else None
        if tag != _ITEM or length == _UNDEFINED or pos + length > len(data):
            return None
        items.append((pos, pos + length))
        pos += length
    return None


def scan(data: bytes | _FileBytes) -> Scan | None:
    """Header values and JPEG frame of a Part-10 JPEG Baseline file's bytes, or None. Only the
    header, the item tags and what the caller then asks of the frame are read: from a
    _FileBytes, the pixels stay on disk.

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
        if tag == 0x00020010:
            syntax = data[start : start + length].decode("latin-1").rstrip(" \x00")
            if syntax != JPEG_BASELINE_8BIT:
                return None
        elif tag in _WANTED:
            values[tag] = data[start : start + length]
        pos = start + length
    return None if frame is None else Scan(values, data, frame)


class _FileBytes:
    """The bytes of an open file, read where sliced (os.pread); the first 8 kB, where the
    header lies (RSNA's are about 1 kB), in one read: the bytes the manifest asks for ahead
    (core.readahead.read_ends_ahead). Enough of `bytes` for `scan`: len and slices."""

    HEAD = ENDS_BYTES

    def __init__(self, fd: int):
        self.fd, self.size = fd, os.fstat(fd).st_size
        self.head = os.pread(fd, self.HEAD, 0)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, part: slice) -> bytes:
        start, stop = part.start, min(part.stop, self.size)
        if stop <= len(self.head):
            return self.head[start:stop]
        return os.pread(self.fd, max(stop - start, 0), start)


def copyable_frame(path: str | Path) -> memoryview | None:
    """The JPG that dicom_to_jpg writes for the file at `path` (its JPEG frame, pad byte
    dropped) when the fast path can tell it is dicomio.copyable_jpeg's case: MONOCHROME2, 8 bits
    stored, no rescale, no VOI window or LUT. None otherwise: use dicomio.

    A view into the file's bytes, not a copy: copying a 400 kB frame (fresh pages, faulted in)
    cost more than reading the file (README.md, Performance: dicom_to_jpg)."""
    try:
        data = Path(path).read_bytes()  # the whole frame is wanted: one read
        found = scan(data)
    except OSError:
        return None
    if found is None or not found.whole_jpeg():
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
    start, end = found.frame_at
    if data[end - 2 : end] == b"\xd9\x00":  # EOI, then the fragment's pad byte
        end -= 1
    return memoryview(data)[start:end]


def header_info(path: str | Path) -> DicomInfo | None:
    """dicomio.check_dataset's DicomInfo for the file at `path` when the fast path finds a file
    that passes every one of its checks; None for anything else (dicomio then reads the file,
    and refuses it with the reason where it is unusable)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:  # reads the header and a few bytes at each end of the frame, not the pixels
        found = scan(_FileBytes(fd))
        if found is None or not found.whole_jpeg():
            return None
        return _info(found)
    except (OSError, struct.error):  # changed under us, or unreadable: pydicom will say
        return None
    finally:
        os.close(fd)


def _info(found: Scan) -> DicomInfo | None:
    rows, cols = found.ushort(ROWS, 0), found.ushort(COLUMNS, 0)
    modality, photometric = found.text(MODALITY), found.text(PHOTOMETRIC)
    view, sex, age = found.text(VIEW), found.text(PATIENT_SEX), found.text(PATIENT_AGE)
    try:
        frames = int(found.text(FRAMES) or 1)
    except (TypeError, ValueError):
        return None
    if modality is None or view is None or sex is None or age is None or rows is None or cols is None:
        return None
    if (
        (modality and modality not in RADIOGRAPH_MODALITIES)
        or not (rows >= 1 and cols >= 1 and rows * cols <= MAX_PIXELS)
        or found.ushort(SAMPLES, 1) != 1
        or frames != 1
        or photometric not in ("MONOCHROME1", "MONOCHROME2")
    ):
        return None
    return DicomInfo(rows=rows, cols=cols, view=view, sex=sex, age=parse_age(age))
