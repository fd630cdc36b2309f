from pneumoflow.logs import to_file

to_file(snakemake.log[0])

from pathlib import Path

from pneumoflow.synth import generate

generate(
    Path(snakemake.output.labels).parent,
    n=snakemake.params.n,
    seed=snakemake.params.seed,
    size=snakemake.params.size,
)
