# Rule arrays: pneumoflow.stages.arrays.run (core.job passes it the rule's keywords by name).
from pneumoflow.core.job import arguments, start

start(snakemake)

from pneumoflow.stages.arrays import run

run(**arguments(snakemake, run))
