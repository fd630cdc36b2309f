from pneumoflow.logs import to_file

to_file(snakemake.log.main)

from pneumoflow.manifest import run_manifest

split = snakemake.params.split
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
    val_fraction=split["val_fraction"],
    test_fraction=split["test_fraction"],
    seed=split["seed"],
    max_images=snakemake.params.max_images,
)
