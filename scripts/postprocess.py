from pneumoflow.logs import to_file

to_file(snakemake.log[0])

from pneumoflow.jobenv import claim_gpus

claim_gpus(0)  # inference on the CPU: leave the GPUs to the training jobs that claimed them


from pneumoflow.postprocess import run_stage
from pneumoflow.tracking import exported_section

run_stage(
    model=snakemake.input.model,
    val_npz=list(snakemake.input.val),
    manifest=snakemake.input.manifest,
    boxes_tsv=snakemake.input.boxes,
    gate_predictions=snakemake.input.get("gate"),
    gate_with=snakemake.params.gate_with,
    run_id_file=snakemake.input.run_id,
    out_json=snakemake.output.settings,
    sweep_csv=snakemake.output.sweep,
    mlflow_section=exported_section(),
)
