# Rule synthetic_sample: pneumoflow.stages.synthetic_sample.run (core.job passes it the rule's keywords).
from pneumoflow.core.job import arguments, start

start(snakemake)

from pneumoflow.stages.synthetic_sample import run

run(**arguments(snakemake, run))
