"""Rule manifest: the data source's reader (sources.readers) lists, checks and splits the
images; the manifest is then cut into the shard tables the shard jobs read."""

from __future__ import annotations

import json

from pneumoflow.formats.shardtables import write_slices
from pneumoflow.sources.readers import reader


def run(
    *,
    source: str,
    data_dir: str,
    source_settings: str,
    n_shards: int,
    max_rejected_fraction: float,
    manifest: str,
    boxes: str,
    rejected: str,
    rejected_log: str,
    shards: list[str],
    shard_boxes: list[str],
    splits: list[str],
) -> None:
    """Write `manifest`, `boxes` and `rejected` for the images of `source` in `data_dir` (its
    `source_settings`, JSON), then each shard's rows (`shards`, `shard_boxes`) and each shard x
    split's (`splits`). The refusals also go to `rejected_log`, kept when the job fails."""
    reader(source).write_manifest(
        data_dir,
        json.loads(source_settings),
        n_shards=n_shards,
        manifest_out=manifest,
        boxes_out=boxes,
        rejected_out=rejected,
        rejected_log=rejected_log,
        max_rejected_fraction=max_rejected_fraction,
    )
    write_slices(manifest, boxes, shard_manifests=shards, shard_boxes=shard_boxes, split_manifests=splits)
