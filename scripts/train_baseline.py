# Rule train_baseline: pneumoflow.stages.train_baseline.run (core.job passes it the rule's keywords by name).
from pneumoflow.core.job import arguments, start

start(snakemake)

from pneumoflow.stages.train_baseline import run

run(**arguments(snakemake, run))
