"""Atomic file writes: write to a temp file in the same directory, then rename."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A write that failed with less than this left on its disk failed for want of space.
DISK_FULL_BYTES = 16 * 2**20


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds.

    An interrupted or failed write leaves no file at `path` that looks finished.
    A write that failed because the disk is full raises OSError(ENOSPC) naming `path`,
    whatever the writer raised (torch.save reports it as an opaque RuntimeError).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except Exception as exc:
        free = shutil.disk_usage(path.parent).free  # measured before the partial file goes
        Path(tmp).unlink(missing_ok=True)
        if free < DISK_FULL_BYTES and getattr(exc, "errno", None) != errno.ENOSPC:
            raise OSError(
                errno.ENOSPC,
                f"No space left on device writing {path} ({free // 1024} kB free): free some space "
                f"and rerun; finished files are kept ({type(exc).__name__}: {str(exc)[:200]})",
            ) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`; it replaces `path` only if the block succeeds.

    For a shard's many small files: one rename makes the whole folder appear at
    once, which costs far less than a rename per file (the files inside are
    written plainly).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*"):  # left by a killed earlier attempt
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write `data` to `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
