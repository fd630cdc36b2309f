"""Rule arrays: one split x shard of images and masks at one size, as an .npz (formats.arrays)."""

from __future__ import annotations

from pneumoflow.formats.arrays import build_arrays


def run(
    *, manifest: str, split: str, shard: str, size: str, jpg: str, masks: str, refused: str, npz: str
) -> None:
    """Write the `split` x `shard` rows of `manifest` at `size` px to `npz`, from the JPGs in
    `jpg` and the PNGs in `masks`, leaving out what dicom_to_jpg `refused`."""
    build_arrays(manifest, split, int(shard), int(size), jpg, masks, refused, npz)
