from pneumoflow.logs import to_file

to_file(snakemake.log.main)

from pneumoflow.manifest import run_manifest
from pneumoflow.shardtables import write_slices

run_manifest(
    snakemake.input.labels,
    snakemake.input.classes,
    snakemake.params.dicom_dir,
    manifest_out=snakemake.output.manifest,
    boxes_out=snakemake.output.boxes,
    rejected_out=snakemake.output.rejected,
    rejected_log=snakemake.log.rejected,
    max_rejected_fraction=snakemake.params.max_rejected_fraction,
    n_shards=snakemake.params.shards,
    val_fraction=snakemake.params.val_fraction,
    test_fraction=snakemake.params.test_fraction,
    seed=snakemake.params.split_seed,
    max_images=snakemake.params.max_images,
)
write_slices(
    snakemake.output.manifest,
    snakemake.output.boxes,
    shard_manifests=snakemake.output.shards,
    shard_boxes=snakemake.output.shard_boxes,
    split_manifests=snakemake.output.splits,
)
