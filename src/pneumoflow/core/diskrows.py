"""Rows of arrays kept on disk, read one at a time: training memory bounded by a batch, not a split.

A row is `array[i]` of an uncompressed .npy array, alone in a .npy file or a member
of an .npz (the arrays stage writes them uncompressed). Each read is one pread at
the row's byte offset, so DataLoader workers can share the open files after fork.
"""

from __future__ import annotations

import bisect
import os
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

LOCAL_HEADER = struct.Struct("<4s22xHH")  # zip local file header: signature ... name len, extra len


def read_npy_header(f, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy whose header starts at f's position; refuses
    pickled objects (`where` names the file in the error)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
    except ValueError as exc:
        raise ValueError(f"{where} is not a .npy array ({exc}); rebuild it") from exc
    if dtype.hasobject:
        raise ValueError(f"{where} holds pickled Python objects, which are never loaded; rebuild it")
    return shape, fortran, dtype


def _npy_layout(f, where: str) -> tuple[int, tuple[int, ...], np.dtype]:
    """(data offset, shape, dtype) of the .npy whose header starts at f's position."""
    shape, fortran, dtype = read_npy_header(f, where)
    if fortran or not shape:
        raise ValueError(f"{where}: not a C-ordered array of rows; rebuild it")
    return f.tell(), shape, dtype


def npy_layout(path: str | Path, key: str | None = None) -> tuple[int, tuple[int, ...], np.dtype]:
    """(data offset in the file, shape, dtype) of a .npy file, or of member `key` of an .npz."""
    where = f"{path}" if key is None else f"{path}:{key}"
    with open(path, "rb") as f:
        if key is None:
            return _npy_layout(f, where)
        try:
            info = zipfile.ZipFile(f).getinfo(f"{key}.npy")
        except (zipfile.BadZipFile, KeyError) as exc:
            raise ValueError(f"{where}: no such array ({exc}); rebuild it with the arrays stage") from exc
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{where} is compressed, so its rows cannot be read in place; rebuild it")
        f.seek(info.header_offset)
        signature, name_len, extra_len = LOCAL_HEADER.unpack(f.read(LOCAL_HEADER.size))
        if signature != b"PK\x03\x04":
            raise ValueError(f"{where}: damaged zip entry; rebuild it")
        f.seek(info.header_offset + LOCAL_HEADER.size + name_len + extra_len)
        return _npy_layout(f, where)


class DiskRows:
    """The rows of several same-shaped arrays, concatenated: `rows[i]` is a (*row_shape) array.

    parts: [(path, npz member or None), ...], e.g. every shard's "images" of one split.
    """

    def __init__(self, parts: list[tuple[str | Path, str | None]]):
        self._fds: dict[int, int] = {}  # part -> open file, opened on first read
        if not parts:
            raise ValueError("no arrays to read rows from")
        layouts = [npy_layout(path, key) for path, key in parts]
        shapes = {(shape[1:], dtype) for _, shape, dtype in layouts}
        if len(shapes) > 1:
            raise ValueError(f"rows of different shapes or types in {[str(p) for p, _ in parts]}")
        ((self.row_shape, self.dtype),) = shapes
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self.paths = [str(path) for path, _ in parts]
        self.offsets = [offset for offset, _, _ in layouts]
        self.starts = np.cumsum([0, *(shape[0] for _, shape, _ in layouts)]).tolist()

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        part = bisect.bisect_right(self.starts, index) - 1
        if part not in self._fds:
            self._fds[part] = os.open(self.paths[part], os.O_RDONLY)
        offset = self.offsets[part] + (index - self.starts[part]) * self.row_bytes
        row = np.empty(self.row_shape, self.dtype)
        # ndarray is a buffer; numpy's stubs declare __buffer__ only for Python 3.12+
        if os.preadv(self._fds[part], [row], offset) != self.row_bytes:  # type: ignore[list-item]
            raise OSError(f"{self.paths[part]} is shorter than its header says; rebuild it")
        return row

    def __getstate__(self) -> dict:  # open files do not travel to spawned workers; they reopen
        return {**self.__dict__, "_fds": {}}

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        self.close()


def save_rows(path: str | Path, batches: Iterable[np.ndarray], n_rows: int) -> DiskRows:
    """Write (B, *row_shape) batches, n_rows in all, as one .npy file one batch at a time; return its rows."""
    path = Path(path)
    written, header = 0, None
    with open(path, "wb") as f:
        for batch in batches:
            batch = np.ascontiguousarray(batch)
            if header is None:
                header = {"descr": np.lib.format.dtype_to_descr(batch.dtype), "fortran_order": False,
                          "shape": (n_rows, *batch.shape[1:])}  # fmt: skip
                np.lib.format.write_array_header_2_0(f, header)
            f.write(batch.tobytes())
            written += len(batch)
    if written != n_rows or header is None:
        raise ValueError(f"{path}: {written} rows written, {n_rows} announced")
    return DiskRows([(path, None)])
