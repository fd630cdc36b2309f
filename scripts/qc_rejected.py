from pneumoflow.logs import to_file

to_file(snakemake.log[0])

from pneumoflow.qc import combine

combine([snakemake.input.manifest, *snakemake.input.shards], snakemake.output[0])
