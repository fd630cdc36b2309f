from pneumoflow.logs import to_file

to_file(snakemake.log[0])

from pneumoflow.jobenv import claim_gpus

claim_gpus(0)  # inference on the CPU: leave the GPUs to the training jobs that claimed them

from pneumoflow.submission import write_submission

write_submission(
    snakemake.params.image_dir,
    snakemake.input.model,
    snakemake.output[0],
    postprocess_json=snakemake.input.postprocess,
    gate_with=snakemake.params.gate_with,
    gate_model=snakemake.input.get("gate_model"),
)
