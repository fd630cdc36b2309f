from pneumoflow.logs import to_file

to_file(snakemake.log[0])

from pneumoflow.masks import masks_shard
from pneumoflow.shardtables import write_index

masks_shard(
    snakemake.input.manifest,
    snakemake.input.boxes,
    int(snakemake.wildcards.shard),
    snakemake.output.masks,
)
write_index(snakemake.input.manifest, snakemake.output.masks, ".png", snakemake.output.index)
