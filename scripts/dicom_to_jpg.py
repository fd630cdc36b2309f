from pneumoflow.logs import to_file

to_file(snakemake.log[0])

from pneumoflow.shardtables import write_index

if snakemake.params.source == "imagefolder":
    from pneumoflow.imagefolder import convert_shard

    source_dir = snakemake.params.root
else:
    from pneumoflow.convert import convert_shard

    source_dir = snakemake.params.dicom_dir
convert_shard(
    snakemake.input.manifest,
    int(snakemake.wildcards.shard),
    source_dir,
    snakemake.output.jpg,
    snakemake.output.rejected,
)
write_index(
    snakemake.input.manifest, snakemake.output.jpg, ".jpg", snakemake.output.index, snakemake.output.rejected
)
