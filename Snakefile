# pneumoflow: RSNA chest X-ray DICOMs -> arrays -> models -> report. See README.md.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"


# Quick bookkeeping that runs on the submit host, not as cluster jobs.
localrules:
    qc_rejected,
    report,


onstart:
    start_tracking()


onsuccess:
    end_tracking(ok=True)


onerror:
    end_tracking(ok=False)


rule all:
    default_target: True
    input:
        get_final_outputs(),
