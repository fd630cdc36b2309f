"""Reading many files once, in order, with the disk kept busy (the DICOMs of the manifest and
of dicom_to_jpg).

One file at a time leaves the disk idle while the file just read is worked on, and a file
read once stays in the page cache, pushing out what a later stage reads next (the JPGs that
the arrays jobs decode). `read_ahead` asks the kernel to start reading the next files
(POSIX_FADV_WILLNEED, no threads) and lets it drop each file once its caller is done with it
(POSIX_FADV_DONTNEED); `read_ends_ahead` asks only for each file's first and last bytes (a
DICOM's header, and the item tags after its frame). All are hints: where the kernel ignores
them, only speed changes. Measured in README.md, Performance (full-size preprocessing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

DEPTH = 16  # whole files asked for ahead: about 7 MB of RSNA-size DICOMs
ENDS_DEPTH = 32  # files whose ends are asked for ahead: 64 small reads in flight
ENDS_BYTES = 8192  # asked for at each end: an RSNA header is about 1 kB


def _advise(path: Path, advice: int, ends: int = 0) -> None:
    """posix_fadvise the whole file at `path`, or only its first and last `ends` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # a missing or unreadable file is the reader's to report
    try:
        if ends:
            os.posix_fadvise(fd, 0, ends, advice)
            os.posix_fadvise(fd, max(os.fstat(fd).st_size - ends, 0), ends, advice)
        else:
            os.posix_fadvise(fd, 0, 0, advice)
    finally:
        os.close(fd)


def read_ahead(paths: Sequence[Path]) -> Iterator[Path]:
    """Yield each of `paths` in order once the next DEPTH are being read into the page cache;
    after the caller is done with a path (the next one is asked for), drop it from the cache."""
    return _hinted(paths, DEPTH, ends=0, drop=True)


def read_ends_ahead(paths: Sequence[Path]) -> Iterator[Path]:
    """Yield each of `paths` in order once the first and last ENDS_BYTES of the next ENDS_DEPTH
    are being read into the page cache. Nothing is dropped: dicom_to_jpg reads these files next."""
    return _hinted(paths, ENDS_DEPTH, ends=ENDS_BYTES, drop=False)


def _hinted(paths: Sequence[Path], depth: int, *, ends: int, drop: bool) -> Iterator[Path]:
    if not hasattr(os, "posix_fadvise"):  # not Linux: plain reads
        yield from paths
        return
    for path in paths[:depth]:
        _advise(path, os.POSIX_FADV_WILLNEED, ends)
    for i, path in enumerate(paths):
        if i + depth < len(paths):
            _advise(paths[i + depth], os.POSIX_FADV_WILLNEED, ends)
        yield path
        if drop:
            _advise(path, os.POSIX_FADV_DONTNEED)
