from pneumoflow.logs import to_file

to_file(snakemake.log[0])

from pneumoflow.jobenv import claim_gpus

claim_gpus(snakemake.resources.gpu)  # before torch / TensorFlow start

import json
from pathlib import Path

from pneumoflow.provenance import run_tags
from pneumoflow.tracking import exported_section
from pneumoflow.train_unet import run_stage

run_stage(
    json.loads(snakemake.params.settings),
    train_npz=list(snakemake.input.train),
    val_npz=list(snakemake.input.val),
    manifest=snakemake.input.manifest,
    out_dir=str(Path(snakemake.output.model).parent),
    run_id_out=snakemake.output.run_id,
    backup_dir=snakemake.params.backup_dir,
    mlflow_section=exported_section(),
    tags=run_tags(snakemake.rule, snakemake.params.data_source),
    split_seed=snakemake.params.split_seed,
    threads=snakemake.threads,
    code=snakemake.params.code,
)
