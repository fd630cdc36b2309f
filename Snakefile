# pneumoflow: RSNA chest X-ray DICOMs -> arrays -> models -> report. See README.md.
import sys
from pathlib import Path

import yaml
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


# The package in src/ serves the Snakefile and every job, installed or not.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from pneumoflow.core.canonical import canonical_numbers, read_numbers

# One spelling per value: YAML reads 1e-3 as a string, and 1.0 is 1 (see README, Reruns).
read_numbers(
    config,
    yaml.safe_load(Path(workflow.basedir, "schemas/config.schema.yaml").read_text()),
)
validate(config, "schemas/config.schema.yaml")
canonical_numbers(config)  # the defaults validate filled in, too


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
