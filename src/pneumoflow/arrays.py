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

import logging
from pathlib import Path

import cv2
import numpy as np

from pneumoflow import qc
from pneumoflow.atomic import atomic_path
from pneumoflow.tables import read_manifest

log = logging.getLogger(__name__)


def load_resized(jpg: str | Path, mask_png: str | Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """((size, size) uint8 image, (size, size) uint8 {0,1} mask) for one image."""
    image = cv2.imread(str(jpg), cv2.IMREAD_GRAYSCALE)
    mask = cv2.imread(str(mask_png), cv2.IMREAD_GRAYSCALE)
    if image is None or mask is None:
        raise OSError(f"cannot read {jpg if image is None else mask_png}")
    if image.shape != mask.shape:
        raise ValueError(f"{jpg} is {image.shape} but its mask {mask_png} is {mask.shape}")
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return image, (mask > 127).astype(np.uint8)


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
    for i, pid in enumerate(rows.patientId):
        images[i], masks[i] = load_resized(Path(jpg_dir) / f"{pid}.jpg", Path(mask_dir) / f"{pid}.png", size)
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


def load_arrays(paths: list[str | Path]) -> dict[str, np.ndarray]:
    """Concatenate the arrays of several .npz files (no pickles are loaded)."""
    parts = [np.load(p, allow_pickle=False) for p in paths]
    keys = ("images", "masks", "labels", "classes", "patient_ids")
    return {k: np.concatenate([part[k] for part in parts]) for k in keys}
