from pneumoflow.logs import to_file

to_file(snakemake.log[0])

from pneumoflow.masks import masks_shard

masks_shard(
    snakemake.input.manifest,
    snakemake.input.boxes,
    int(snakemake.wildcards.shard),
    snakemake.output.masks,
)
