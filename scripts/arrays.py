from pneumoflow.logs import to_file

to_file(snakemake.log[0])

from pneumoflow.arrays import build_arrays

build_arrays(
    snakemake.input.manifest,
    snakemake.wildcards.split,
    int(snakemake.wildcards.shard),
    int(snakemake.wildcards.size),
    snakemake.input.jpg,
    snakemake.input.masks,
    snakemake.input.refused,
    snakemake.output.npz,
)
