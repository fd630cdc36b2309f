from pneumoflow.logs import to_file

to_file(snakemake.log[0])

import json
import os

from pneumoflow.provenance import COMMIT_ENV
from pneumoflow.report import build_report
from pneumoflow.tracking_settings import TrackingSettings

inputs = snakemake.input
models = {
    model: {
        "metrics": inputs[f"{model}_metrics"],
        "roc": inputs[f"{model}_roc"],
        "run_id": inputs[f"{model}_run_id"],
        "figures": list(inputs[f"{model}_figures"]),
    }
    for model in snakemake.params.models
}
build_report(
    models,
    manifest=inputs.manifest,
    rejected=inputs.rejected,
    config=json.loads(snakemake.params.config),
    commit=os.environ.get(COMMIT_ENV, "unknown"),
    out_html=snakemake.output.html,
    skipped=snakemake.params.skipped,
    mlflow_url=TrackingSettings.exported().server_url,
)
