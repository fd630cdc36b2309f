"""Per-shard slices of the manifest and content indexes of shard folders.

They let a data change rerun only the shards it touches. The shard jobs read their
shard's slice of the manifest instead of the whole manifest, and the arrays jobs
read a small index of their split's JPGs and masks (one sha256 per image) instead
of watching the shard folders. A rewritten slice or index whose content did not
change is recognised by Snakemake's recorded input checksums, so when the
manifest or a shard job reruns (they are checkpoints: the DAG is re-evaluated
after each), only the jobs whose slice or index really changed follow.

Slices and indexes are small TSVs: a shard of 26,684 images / 8 shards is about
0.3 MB, under Snakemake's 1 MB checksum limit (`--max-checksum-file-size`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pneumoflow.core import qc
from pneumoflow.core.split import SPLITS
from pneumoflow.core.tables import read_manifest, read_tsv, write_tsv

INDEX_COLUMNS = ["patientId", "sha256"]


def write_slices(
    manifest_tsv: str | Path,
    boxes_tsv: str | Path,
    *,
    shard_manifests: Sequence[str | Path],
    shard_boxes: Sequence[str | Path],
    split_manifests: Sequence[str | Path],
) -> None:
    """Write, for shard i = 0..n-1, the manifest rows of shard i to shard_manifests[i], its
    boxes to shard_boxes[i], and the rows of (shard i, SPLITS[j]) to
    split_manifests[i * len(SPLITS) + j] (Snakemake's expand order: shard, then split)."""
    manifest = read_manifest(manifest_tsv)
    boxes = read_tsv(boxes_tsv, dtype={"patientId": str})
    shard_of = manifest.set_index("patientId")["shard"]
    box_shard = boxes.patientId.map(shard_of)
    if len(split_manifests) != len(shard_manifests) * len(SPLITS):
        raise ValueError(
            f"expected {len(shard_manifests) * len(SPLITS)} split slices "
            f"({len(shard_manifests)} shards x {len(SPLITS)} splits), got {len(split_manifests)}"
        )
    for shard, (rows_out, boxes_out) in enumerate(zip(shard_manifests, shard_boxes, strict=True)):
        rows = manifest[manifest["shard"] == shard]
        write_tsv(rows, rows_out)
        write_tsv(boxes[box_shard == shard], boxes_out)
        for j, split in enumerate(SPLITS):
            write_tsv(rows[rows["split"] == split], split_manifests[shard * len(SPLITS) + j])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_index(
    shard_manifest: str | Path,
    folder: str | Path,
    suffix: str,
    index_outs: Sequence[str | Path],
    rejected_tsv: str | Path | None = None,
) -> None:
    """For each split j, write index_outs[j] (in SPLITS order): one row per image of that
    split in `shard_manifest`, patientId and the sha256 of <folder>/<patientId><suffix>, or
    `refused: <reason>` for an image listed in `rejected_tsv`."""
    rows = read_manifest(shard_manifest)
    refused = {}
    if rejected_tsv is not None:
        table = qc.read_rejections(rejected_tsv)
        refused = dict(zip(table.patientId, table.reason, strict=True))
    for split, out in zip(SPLITS, index_outs, strict=True):
        ids = rows.loc[rows["split"] == split, "patientId"]
        digests = [
            f"refused: {refused[pid]}" if pid in refused else _sha256(Path(folder) / f"{pid}{suffix}")
            for pid in ids
        ]
        write_tsv(pd.DataFrame({"patientId": ids, "sha256": digests}, columns=INDEX_COLUMNS), out)
