from pneumoflow.logs import to_file

to_file(snakemake.log[0])

from pneumoflow.convert import convert_shard

convert_shard(
    snakemake.input.manifest,
    int(snakemake.wildcards.shard),
    snakemake.params.dicom_dir,
    snakemake.output.jpg,
    snakemake.output.rejected,
)
