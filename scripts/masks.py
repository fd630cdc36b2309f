# Rule masks: pneumoflow.stages.masks.run (core.job passes it the rule's keywords by name).
from pneumoflow.core.job import arguments, start

start(snakemake)

from pneumoflow.stages.masks import run

run(**arguments(snakemake, run))
