# Rule train_unet: pneumoflow.stages.train_unet.run (core.job passes it the rule's keywords by name).
from pneumoflow.core.job import arguments, start

start(snakemake, gpus=snakemake.resources.gpu)  # claimed before torch / TensorFlow load

from pneumoflow.stages.train_unet import run

run(**arguments(snakemake, run))
