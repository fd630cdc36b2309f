"""Rule report (run): every model side by side in one self-contained HTML page.

Images are embedded as base64 PNGs, so the page opens offline; every string that
comes from data or config is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from pneumoflow.core.atomic import atomic_path
from pneumoflow.core.provenance import COMMIT_ENV
from pneumoflow.core.tables import read_manifest, read_tsv
from pneumoflow.formats import plots
from pneumoflow.tracking.settings import TrackingSettings

# What the seed study reported (its own 200-image split, not our test set).
# Its "mean IoU" 0.9528 is Keras' MeanIoU over two classes (background and opacity): shown
# beside our two-class mean IoU; our opacity-only IoU is its own row.
SEED_FIGURES = {
    "unet": {"dice": 0.95, "mean_iou_2class": 0.9528},
    "vgg16": {"accuracy": 0.839},
    "resnet101": {"accuracy": 0.846},
}
SHOWN = {
    "unet": [
        "dice",
        "mean_iou_2class",
        "iou",
        "mean_dice_positive",
        "empty_rate_negative",
        "empty_rate_negative_postprocessed",
        "rsna_score_raw",
        "rsna_score",
        "image_roc_auc",
        "image_accuracy",
    ],
    "classifier": [
        "threshold",
        "accuracy",
        "accuracy_at_0.5",
        "precision",
        "recall",
        "specificity",
        "f1",
        "roc_auc",
    ],
}
LABELS = {
    "iou": "IoU (opacity only)",
    "mean_iou_2class": "mean IoU (2 classes, as Keras MeanIoU)",
    "threshold": "threshold (Youden's J on val)",
    "accuracy": "accuracy (at the threshold)",
    "accuracy_at_0.5": "accuracy at 0.5",
    "empty_rate_negative": "empty rate on negatives, raw mask",
    "empty_rate_negative_postprocessed": "empty rate on negatives, post-processed boxes",
    "rsna_score_raw": "RSNA score, raw boxes (evaluate.threshold)",
    "rsna_score": "RSNA score, post-processed (tuned on val)",
    "image_accuracy": "image accuracy (max probability vs threshold)",
}


def baseline_flags(results: dict[str, dict]) -> dict[str, str]:
    """{classifier: why it does not beat the baseline} on test accuracy and ROC-AUC."""
    base = results.get("baseline")
    if base is None:
        return {}
    flags = {}
    for model, result in results.items():
        if model in ("unet", "baseline"):
            continue
        worse = [
            f"{key} {result[key]:.3f} vs baseline {base[key]:.3f}"
            for key in ("accuracy", "roc_auc")
            if result.get(key, float("nan")) < base.get(key, float("nan"))
        ]
        if worse:
            flags[model] = "does not beat the pixel baseline: " + ", ".join(worse)
    return flags


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#666;font-size:90%}.flag{color:#a00;font-weight:bold}pre{background:#f7f7f7;padding:1em;overflow:auto}"""


class _PlainDumper(yaml.SafeDumper):
    """Writes repeated values out in full (no &id001 / *id001 anchors in the shown config)."""

    def ignore_aliases(self, data) -> bool:
        return True


def _esc(value) -> str:
    return html.escape(str(value))


def _img(path: str | Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else _esc(value)


def metrics_table(results: dict[str, dict]) -> str:
    """Rows: model x metric, with this run's test value beside the seed study's figure."""
    rows = []
    for model, result in results.items():
        for key in SHOWN["unet" if model == "unet" else "classifier"]:
            seed = SEED_FIGURES.get(model, {}).get(key)
            rows.append(
                f"<tr><td>{_esc(model)}</td><td>{_esc(LABELS.get(key, key))}</td>"
                f"<td>{_fmt(result.get(key, float('nan')))}</td>"
                f"<td>{'' if seed is None else _fmt(seed)}</td></tr>"
            )
    return (
        "<table><tr><th>model</th><th>metric</th><th>this run (test split)</th>"
        "<th>seed study (reported)</th></tr>" + "".join(rows) + "</table>"
    )


def dataset_summary(manifest_tsv: str | Path, rejected_tsv: str | Path) -> str:
    manifest = read_manifest(manifest_tsv)
    counts = pd.crosstab(manifest["class"], manifest["split"]).reindex(
        columns=["train", "val", "test"], fill_value=0
    )
    rows = "".join(
        f"<tr><td>{_esc(k)}</td>" + "".join(f"<td>{v}</td>" for v in r) + "</tr>"
        for k, r in counts.iterrows()
    )
    rejected = read_tsv(rejected_tsv, dtype=str)
    listed = "".join(
        f"<tr><td>{_esc(r.stage)}</td><td>{_esc(r.patientId)}</td><td>{_esc(r.reason)}</td></tr>"
        for r in rejected.head(50).itertuples()
    )
    return (
        f"<p>{len(manifest)} images.</p>"
        f"<table><tr><th>class</th><th>train</th><th>val</th><th>test</th></tr>{rows}"
        f"</table><p>{len(rejected)} refused inputs (results/qc/rejected.tsv)"
        + (
            f", first 50:</p><table><tr><th>stage</th><th>patientId</th><th>reason</th></tr>{listed}</table>"
            if len(rejected)
            else ".</p>"
        )
    )


def _run_cell(run_id: str, mlflow_url: str | None) -> str:
    if not run_id:
        return "not tracked"
    if not mlflow_url:
        return _esc(run_id)
    return f'<a href="{_esc(mlflow_url)}/#/runs/{_esc(run_id)}">{_esc(run_id)}</a>'


def build_report(
    models: dict[str, dict],
    *,
    manifest: str,
    rejected: str,
    config: dict,
    commit: str,
    out_html: str,
    skipped: dict[str, str] | None = None,
    mlflow_url: str | None = None,
) -> None:
    """Write the page. `models`: {name: {metrics, roc, run_id, figures: [png, ...]}} (paths);
    `skipped`: {model: why it did not run}; `mlflow_url`: the tracking server's address, to
    link each run id to its page in the MLflow UI (None: plain ids)."""
    results = {m: json.loads(Path(f["metrics"]).read_text()) for m, f in models.items()}
    curves = {}
    for model, files in models.items():
        roc = pd.read_csv(files["roc"])
        auc = results[model].get("roc_auc", results[model].get("image_roc_auc"))
        curves[model + (" (image score: max mask probability)" if model == "unet" else "")] = (
            roc.fpr,
            roc.tpr,
            auc,
        )
    with tempfile.TemporaryDirectory() as tmp:
        plots.plot_roc(curves, Path(tmp) / "roc.png")
        roc_img = _img(Path(tmp) / "roc.png", "ROC curves")
    figures = "".join(
        f"<h3>{_esc(model)}</h3>" + "".join(_img(p, f"{model} {Path(p).stem}") for p in files["figures"])
        for model, files in models.items()
    )
    run_ids = "".join(
        f"<tr><td>{_esc(m)}</td><td>{_run_cell(Path(f['run_id']).read_text().strip(), mlflow_url)}</td></tr>"
        for m, f in models.items()
    )
    flags = "".join(f"<li>{_esc(m)} {_esc(why)}</li>" for m, why in baseline_flags(results).items())
    flags = f'<p class="flag">Flagged:</p><ul class="flag">{flags}</ul>' if flags else ""
    heads = "".join(f"<li>{_esc(m)}: {_esc(r['head'])}</li>" for m, r in results.items() if r.get("head"))
    heads = f'<p class="note">What trained:</p><ul class="note">{heads}</ul>' if heads else ""
    not_run = "".join(f"<li>{_esc(m)}: {_esc(why)}</li>" for m, why in (skipped or {}).items())
    not_run = f'<p class="note">Not run:</p><ul>{not_run}</ul>' if not_run else ""
    now = datetime.datetime.now().isoformat(timespec="seconds")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>pneumoflow report</title>
<style>{STYLE}</style></head><body>
<h1>pneumoflow: model comparison</h1>
<p class="note">Generated {_esc(now)} from commit {_esc(commit)}.</p>
<h2>Test metrics</h2>{metrics_table(results)}{flags}{heads}{not_run}
<p class="note">Seed study figures are as the study reported them, on its own 200-image split;
not measured here.</p>
<h2>ROC curves (test split)</h2>{roc_img}
<h2>Learning curves and test figures</h2>{figures}
<h2>Data</h2>{dataset_summary(manifest, rejected)}
<h2>MLflow runs</h2><table><tr><th>model</th><th>run id</th></tr>{run_ids}</table>
<h2>Configuration</h2><pre>{_esc(yaml.dump(config, Dumper=_PlainDumper, sort_keys=False))}</pre>
</body></html>"""
    with atomic_path(out_html) as tmp:
        tmp.write_text(page, encoding="utf-8")


def run(
    *,
    models: list[str],
    metrics: list[str],
    roc: list[str],
    run_ids: list[str],
    figures: list[str],
    manifest: str,
    rejected: str,
    config: str,
    html: str,
    skipped: dict[str, str] | None = None,
) -> None:
    """Write the `html` report of the `models` from their test `metrics`, `roc` points, MLflow
    `run_ids` (one each, in the order of `models`) and `figures` (results/<...>/<model>/*.png),
    with the data summary (`manifest`, `rejected`), the result `config` (JSON) and the
    `skipped` models."""
    files = {
        model: {
            "metrics": metrics[i],
            "roc": roc[i],
            "run_id": run_ids[i],
            "figures": [f for f in figures if Path(f).parent.name == model],
        }
        for i, model in enumerate(models)
    }
    build_report(
        files,
        manifest=manifest,
        rejected=rejected,
        config=json.loads(config),
        commit=os.environ.get(COMMIT_ENV, "unknown"),
        out_html=html,
        skipped=skipped,
        mlflow_url=TrackingSettings.exported().server_url,
    )
