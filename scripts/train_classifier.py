from pneumoflow.logs import to_file

to_file(snakemake.log[0])

from pneumoflow.jobenv import claim_gpus

claim_gpus(snakemake.resources.gpu)  # before torch / TensorFlow start

import json

from pneumoflow.provenance import run_tags
from pneumoflow.tracking import exported_section
from pneumoflow.train_classifier import run_stage

run_stage(
    snakemake.params.model,
    json.loads(snakemake.params.settings),
    train_npz=list(snakemake.input.train),
    val_npz=list(snakemake.input.val),
    manifest=snakemake.input.manifest,
    model_out=snakemake.output.model,
    history_out=snakemake.output.history,
    curves_out=snakemake.output.curves,
    val_predictions_out=snakemake.output.val_predictions,
    run_id_out=snakemake.output.run_id,
    checkpoint=snakemake.params.checkpoint,
    mlflow_section=exported_section(),
    tags=run_tags(snakemake.rule, snakemake.params.data_source),
    split_seed=snakemake.params.split_seed,
    threads=snakemake.threads,
    code=snakemake.params.code,
)
