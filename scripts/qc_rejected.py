# Rule qc_rejected: pneumoflow.stages.qc_rejected.run (core.job passes it the rule's keywords by name).
from pneumoflow.core.job import arguments, start

start(snakemake)

from pneumoflow.stages.qc_rejected import run

run(**arguments(snakemake, run))
