# Rule dicom_to_jpg: pneumoflow.stages.dicom_to_jpg.run (core.job passes it the rule's keywords by name).
from pneumoflow.core.job import arguments, start

start(snakemake)

from pneumoflow.stages.dicom_to_jpg import run

run(**arguments(snakemake, run))
