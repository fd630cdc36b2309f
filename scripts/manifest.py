# Rule manifest: pneumoflow.stages.manifest.run (core.job passes it the rule's keywords by name).
from pneumoflow.core.job import arguments, start

start(snakemake)

from pneumoflow.stages.manifest import run

run(**arguments(snakemake, run))
