from pneumoflow.logs import to_file

to_file(snakemake.log[0])

from pneumoflow.jobenv import claim_gpus

claim_gpus(0)  # inference on the CPU: leave the GPUs to the training jobs that claimed them

from pathlib import Path

from pneumoflow.evaluate import run_stage
from pneumoflow.tracking import exported_section

run_stage(
    snakemake.wildcards.model,
    model_path=snakemake.input.model,
    test_npz=list(snakemake.input.test),
    manifest=snakemake.input.manifest,
    boxes=snakemake.input.boxes,
    run_id_file=snakemake.input.run_id,
    out_dir=str(Path(snakemake.output.metrics).parent),
    mlflow_section=exported_section(),
    threshold=snakemake.params.threshold,
    postprocess_json=snakemake.input.get("postprocess"),
    gate_predictions=snakemake.input.get("gate"),
)
