from pneumoflow.logs import to_file

to_file(snakemake.log[0])

from pneumoflow import convert, imagefolder
from pneumoflow.shardtables import write_index

if snakemake.params.source == "imagefolder":
    source_dir, convert_shard = snakemake.params.root, imagefolder.convert_shard
else:
    source_dir, convert_shard = snakemake.params.dicom_dir, convert.convert_shard
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
