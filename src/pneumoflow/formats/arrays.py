"""The arrays stage: one split x shard of JPGs and masks -> resized arrays in one .npz.

The .npz holds, for N images in manifest order:
  images      (N, S, S) uint8   grayscale, 0 = black
  masks       (N, S, S) uint8   {0, 1}, 1 = inside an opacity box
  labels      (N,)      uint8   Target: 1 = Lung Opacity
  classes     (N,)      str     the 3-way RSNA class
  patient_ids (N,)      str
Images are resized to S x S without keeping the aspect ratio, and the mask with
them, so boxes keep lining up. Memory is bounded by one shard.
"""

from __future__ import annotations

import functools
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pneumoflow.core import qc
from pneumoflow.core.atomic import atomic_path
from pneumoflow.core.diskrows import read_npy_header
from pneumoflow.core.tables import read_manifest

log = logging.getLogger(__name__)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W) uint8 -> (size, size) uint8 by area averaging: the one resize of training and prediction."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


# libjpeg decodes straight to 1/2, 1/4 or 1/8 size by scaling in the DCT domain
REDUCED_READS = ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                 (2, cv2.IMREAD_REDUCED_GRAYSCALE_2))  # fmt: skip


def decode_resized(jpg: str | Path | bytes, size: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    """(size, size) uint8 of a JPG file or its bytes, decoded at the smallest libjpeg scale that
    leaves at least 2 x size pixels on each side, then area-resized (see benchmarks/bench_arrays.py
    for speed and the difference to a full decode). `shape` is the image's full (rows, cols), which
    is checked; without it, or for a PNG, the image is decoded whole."""
    name = "JPG bytes" if isinstance(jpg, bytes) else str(jpg)
    data = jpg if isinstance(jpg, bytes) else Path(jpg).read_bytes()
    factor, flag = 1, cv2.IMREAD_GRAYSCALE
    if shape is not None and data.startswith(b"\xff\xd8"):  # JPEG only: other formats decode whole
        factor, flag = next(((f, r) for f, r in REDUCED_READS if min(shape) // f >= 2 * size), (1, flag))
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise OSError(f"cannot decode {name}")
    if shape is not None and image.shape != tuple(-(-n // factor) for n in shape):
        raise ValueError(f"{name} is not {shape[0]}x{shape[1]} pixels as the manifest says")
    return resize_image(image, size)


def load_mask(mask_png: str | Path, size: int, shape: tuple[int, int]) -> np.ndarray:
    """(size, size) uint8 {0, 1} of a mask PNG whose full (rows, cols) must be `shape`, resized
    as cv2.resize(..., INTER_NEAREST) does. The 1-bit PNGs that formats.masks writes are read
    packed (Pillow), and only the rows and columns that the resize keeps are unpacked: 8 times
    less to fill than OpenCV's 8-bit read (README.md, Performance: masks). Any other PNG is
    read whole by OpenCV."""
    try:
        with Image.open(mask_png) as png:
            one_bit = png.mode == "1" and (png.height, png.width) == shape
            packed = png.tobytes() if one_bit else None
    except OSError as exc:  # not a PNG, or cut short: say which file
        raise OSError(f"cannot read {mask_png}: {exc}") from exc
    if packed is None:  # another PNG, or the wrong size (said by the whole read)
        return _load_mask_whole(mask_png, size, shape)
    rows, cols = (_nearest_indices(n, size) for n in shape)
    bits = np.frombuffer(packed, np.uint8).reshape(shape[0], -1)
    return np.unpackbits(bits[rows], axis=1, count=shape[1])[:, cols]


def _load_mask_whole(mask_png: str | Path, size: int, shape: tuple[int, int]) -> np.ndarray:
    mask = cv2.imread(str(mask_png), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise OSError(f"cannot read {mask_png}")
    if mask.shape != shape:
        raise ValueError(f"{mask_png} is not {shape[0]}x{shape[1]} pixels as the manifest says")
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return (mask > 127).astype(np.uint8)


@functools.cache
def _nearest_indices(n: int, size: int) -> np.ndarray:
    """(size,) intp: the source index of each output pixel when INTER_NEAREST resizes n to size.
    Taken from OpenCV itself (a row of indices, resized), so it matches to the last pixel."""
    indices = np.arange(n, dtype=np.int32)[None, :]
    kept = cv2.resize(indices, (size, 1), interpolation=cv2.INTER_NEAREST)[0].astype(np.intp)
    kept.flags.writeable = False  # cached: shared by every call
    return kept


def build_arrays(
    manifest_tsv: str | Path,
    split: str,
    shard: int,
    size: int,
    jpg_dir: str | Path,
    mask_dir: str | Path,
    refused_tsv: str | Path,
    out_npz: str | Path,
) -> int:
    """Write the arrays of `split` x `shard` at `size` to `out_npz`; return the image count.

    Images that dicom_to_jpg refused (listed in `refused_tsv`) are left out.
    """
    manifest = read_manifest(manifest_tsv)
    refused = set(qc.read_rejections(refused_tsv).patientId)
    rows = manifest[(manifest["split"] == split) & (manifest["shard"] == shard)]
    rows = rows[~rows.patientId.isin(refused)]
    images = np.zeros((len(rows), size, size), np.uint8)
    masks = np.zeros((len(rows), size, size), np.uint8)
    for i, row in enumerate(rows.itertuples(index=False)):
        shape = (int(row.rows), int(row.cols))
        images[i] = decode_resized(Path(jpg_dir) / f"{row.patientId}.jpg", size, shape)
        if row.n_boxes:  # without boxes, the mask is all zeros (formats.masks): nothing to read
            masks[i] = load_mask(Path(mask_dir) / f"{row.patientId}.png", size, shape)
    with atomic_path(out_npz) as tmp:
        np.savez(
            tmp,
            images=images,
            masks=masks,
            labels=rows.target.to_numpy(np.uint8),
            classes=rows["class"].to_numpy(str),
            patient_ids=rows.patientId.to_numpy(str),
        )
    log.info("%s shard %d at %dpx: %d images", split, shard, size, len(rows))
    return len(rows)


def _npy_header(npz: str | Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of one array of an .npz, read from its header without loading it.

    Refuses anything but plain arrays: a file that is no .npz, or one holding pickled objects.
    """
    try:
        with zipfile.ZipFile(npz) as archive, archive.open(f"{key}.npy") as f:
            shape, _, dtype = read_npy_header(f, f"{npz}: {key}")
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{npz} is not an arrays file made by the arrays stage ({exc}); rebuild it") from exc
    return shape, dtype


def load_arrays(
    paths: Sequence[str | Path],
    keys: tuple[str, ...] = ("images", "masks", "labels", "classes", "patient_ids"),
) -> dict[str, np.ndarray]:
    """Concatenate `keys` of several .npz files (no pickles are loaded).

    Each array is allocated once at its final size and filled one file at a time, so the
    peak is the result plus one shard; a classifier leaves out the masks (half the memory).
    """
    out = {}
    for key in keys:
        headers = [_npy_header(p, key) for p in paths]
        if not headers:
            out[key] = np.zeros(0)
            continue
        dtype = np.result_type(*(d for _, d in headers))
        total = sum(shape[0] for shape, _ in headers)
        out[key] = np.empty((total, *headers[0][0][1:]), dtype)
        start = 0
        for path, (shape, _) in zip(paths, headers, strict=True):
            with np.load(path, allow_pickle=False) as part:
                out[key][start : start + shape[0]] = part[key]
            start += shape[0]
    return out
