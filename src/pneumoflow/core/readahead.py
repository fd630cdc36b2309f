"""Reading many whole files once, in order, with the disk kept busy (dicom_to_jpg's inputs).

One file at a time leaves the disk idle while the file just read is converted, and a file
read once stays in the page cache, pushing out what a later stage reads next (the JPGs that
the arrays jobs decode). `read_ahead` asks the kernel to start reading the next files
(POSIX_FADV_WILLNEED, no threads) and lets it drop each file once its caller is done with it
(POSIX_FADV_DONTNEED). Both are hints: where the kernel ignores them, only speed changes.
Measured in README.md, Performance (full-size preprocessing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

DEPTH = 16  # files asked for ahead: about 7 MB of RSNA-size DICOMs


def _advise(path: Path, advice: int) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # a missing or unreadable file is the reader's to report
    try:
        os.posix_fadvise(fd, 0, 0, advice)
    finally:
        os.close(fd)


def read_ahead(paths: Sequence[Path]) -> Iterator[Path]:
    """Yield each of `paths` in order once the next DEPTH are being read into the page cache;
    after the caller is done with a path (the next one is asked for), drop it from the cache."""
    if not hasattr(os, "posix_fadvise"):  # not Linux: plain reads
        yield from paths
        return
    for path in paths[:DEPTH]:
        _advise(path, os.POSIX_FADV_WILLNEED)
    for i, path in enumerate(paths):
        if i + DEPTH < len(paths):
            _advise(paths[i + DEPTH], os.POSIX_FADV_WILLNEED)
        yield path
        _advise(path, os.POSIX_FADV_DONTNEED)
