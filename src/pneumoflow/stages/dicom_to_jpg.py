"""Rule dicom_to_jpg: one shard's images as 8-bit JPGs named <patientId>.jpg, by the data
source's reader (sources.readers), and the per-split index the arrays jobs watch."""

from __future__ import annotations

from pneumoflow.formats.shardtables import write_index
from pneumoflow.sources.readers import reader


def run(
    *, shard: str, source: str, data_dir: str, manifest: str, jpg: str, rejected: str, index: list[str]
) -> None:
    """Write shard `shard`'s JPGs (rows of `manifest`) into the folder `jpg`, the refused files
    to `rejected`, and per split the sha256 of each JPG to `index`."""
    reader(source).write_jpgs(manifest, int(shard), data_dir, jpg, rejected)
    write_index(manifest, jpg, ".jpg", index, rejected)
