from pneumoflow.logs import to_file

to_file(snakemake.log.main)

import json

from pneumoflow.imagefolder import run_manifest
from pneumoflow.shardtables import write_slices

run_manifest(
    snakemake.params.root,
    json.loads(snakemake.params.classes),
    snakemake.params.shards,
    manifest_out=snakemake.output.manifest,
    boxes_out=snakemake.output.boxes,
    rejected_out=snakemake.output.rejected,
    rejected_log=snakemake.log.rejected,
    max_rejected_fraction=snakemake.params.max_rejected_fraction,
)
write_slices(
    snakemake.output.manifest,
    snakemake.output.boxes,
    shard_manifests=snakemake.output.shards,
    shard_boxes=snakemake.output.shard_boxes,
    split_manifests=snakemake.output.splits,
)
