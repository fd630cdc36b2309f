# Rule submission: pneumoflow.stages.submission.run (core.job passes it the rule's keywords by name).
from pneumoflow.core.job import arguments, start

start(snakemake, gpus=0)  # inference on the CPU: the GPUs stay with the training jobs

from pneumoflow.stages.submission import run

run(**arguments(snakemake, run))
