"""Rule masks: one shard's box masks as PNGs (formats.masks), and their per-split index."""

from __future__ import annotations

from pneumoflow.formats.masks import masks_shard
from pneumoflow.formats.shardtables import write_index


def run(*, shard: str, manifest: str, boxes: str, masks: str, index: list[str]) -> None:
    """Write a mask PNG per image of shard `shard` (rows of `manifest`, boxes of `boxes`) into
    the folder `masks`, and per split the sha256 of each PNG to `index`."""
    masks_shard(manifest, boxes, int(shard), masks)
    write_index(manifest, masks, ".png", index)
