from pneumoflow.logs import to_file

to_file(snakemake.log[0])

import json

from pneumoflow.baseline import run_stage
from pneumoflow.provenance import run_tags
from pneumoflow.tracking import exported_section

run_stage(
    json.loads(snakemake.params.settings),
    train_npz=list(snakemake.input.train),
    val_npz=list(snakemake.input.val),
    manifest=snakemake.input.manifest,
    model_out=snakemake.output.model,
    val_predictions_out=snakemake.output.val_predictions,
    run_id_out=snakemake.output.run_id,
    mlflow_section=exported_section(),
    tags=run_tags(snakemake.rule, snakemake.params.data_source),
    split_seed=snakemake.params.split_seed,
    code=snakemake.params.code,
)
