"""Rule postprocess: tune the U-Net's box post-processing (pneumoflow.models.postprocessing) on
the val split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pneumoflow.core.atomic import atomic_path
from pneumoflow.core.tables import read_manifest, truth_boxes
from pneumoflow.formats import arrays
from pneumoflow.models.postprocessing import PostProcess, gate_probabilities, tune
from pneumoflow.models.unet_inference import load_unet, unet_probs
from pneumoflow.tracking import model_run
from pneumoflow.tracking.client import connect, experiment_id
from pneumoflow.tracking.settings import TrackingSettings, exported_section


def run(
    *,
    model: str,
    val: list[str],
    manifest: str,
    boxes: str,
    run_id: str,
    settings: str,
    sweep: str,
    gate_with: str | None,
    gate: str | None = None,
) -> PostProcess:
    """Tune PostProcess on the `val` shards' U-Net maps (and, with `gate`, the `gate_with`
    classifier's val probabilities); write the chosen `settings` (JSON) and the `sweep` (CSV),
    track both in the MLflow run beside the U-Net's (`run_id`)."""
    data = arrays.load_arrays(val, keys=("images", "patient_ids"))
    ids = list(data["patient_ids"])
    if not ids:
        raise ValueError("the val split has no images to tune the post-processing on")
    probs = unet_probs(load_unet(model), data["images"])
    frame = read_manifest(manifest).set_index("patientId")
    frames = [(int(frame.rows[pid]), int(frame.cols[pid])) for pid in ids]
    truths = truth_boxes(boxes, ids)
    best, table = tune(probs, frames, truths, ids, gate_probabilities(gate, ids))
    default = table[
        (table.threshold == 0.5) & (table.min_area == 0) & (table.shrink == 1) & table.gate.isna()
    ]
    summary: dict[str, Any] = {
        **best.to_dict(),
        "gate_with": gate_with if best.gate is not None else None,
        "val_rsna_score": float(table.rsna_score.max()),
        "val_rsna_score_default": float(default.rsna_score.iloc[0]) if len(default) else float("nan"),
        "n_val": len(ids),
    }
    with atomic_path(sweep) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(settings) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    store = TrackingSettings.from_config(exported_section())
    client = connect(store)
    if client is not None:
        unet_run = Path(run_id).read_text().strip()
        params = {k: ("none" if v is None else v) for k, v in summary.items() if not k.startswith("val_")}
        tags = {"pneumoflow.kind": "postprocess", model_run.UNET_RUN_TAG: unet_run}
        with model_run.ModelRun(
            client, experiment_id(client, store), "unet_postprocess", params, tags
        ) as run:
            run.log_metrics({k: v for k, v in summary.items() if k.startswith("val_")})
            run.log_outputs({"postprocess.json": settings, "sweep.csv": sweep})
    return best
