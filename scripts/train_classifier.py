# Rule train_<arch>: pneumoflow.stages.train_classifier.run (core.job passes it the rule's keywords by name).
from pneumoflow.core.job import arguments, start

start(snakemake, gpus=snakemake.resources.gpu)  # claimed before torch / TensorFlow load

from pneumoflow.stages.train_classifier import run

run(**arguments(snakemake, run))
