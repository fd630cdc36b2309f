"""The report stage: every model side by side in one self-contained HTML page.

Images are embedded as base64 PNGs, so the page opens offline; every string that
comes from data or config is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from pneumoflow import plots
from pneumoflow.atomic import atomic_path
from pneumoflow.tables import read_manifest, read_tsv

# What the seed study reported (its own 200-image split, not our test set).
SEED_FIGURES = {
    "unet": {"dice": 0.95, "iou": 0.9528},
    "vgg16": {"accuracy": 0.839},
    "resnet101": {"accuracy": 0.846},
}
SHOWN = {
    "unet": ["dice", "iou", "mean_dice_positive", "empty_rate_negative", "rsna_score", "image_roc_auc"],
    "classifier": ["accuracy", "precision", "recall", "specificity", "f1", "roc_auc"],
}

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#666;font-size:90%}pre{background:#f7f7f7;padding:1em;overflow:auto}"""


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
                f"<tr><td>{_esc(model)}</td><td>{_esc(key)}</td>"
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


def build_report(
    models: dict[str, dict],
    *,
    manifest: str,
    rejected: str,
    config: dict,
    commit: str,
    out_html: str,
    skipped: dict[str, str] | None = None,
) -> None:
    """Write the page. `models`: {name: {metrics, roc, run_id, figures: [png, ...]}} (paths);
    `skipped`: {model: why it did not run}."""
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
        f"<tr><td>{_esc(m)}</td><td>{_esc(Path(f['run_id']).read_text().strip() or 'not tracked')}</td></tr>"
        for m, f in models.items()
    )
    not_run = "".join(f"<li>{_esc(m)}: {_esc(why)}</li>" for m, why in (skipped or {}).items())
    not_run = f'<p class="note">Not run:</p><ul>{not_run}</ul>' if not_run else ""
    now = datetime.datetime.now().isoformat(timespec="seconds")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>pneumoflow report</title>
<style>{STYLE}</style></head><body>
<h1>pneumoflow: model comparison</h1>
<p class="note">Generated {_esc(now)} from commit {_esc(commit)}.</p>
<h2>Test metrics</h2>{metrics_table(results)}{not_run}
<p class="note">Seed study figures are as the study reported them, on its own 200-image split;
not measured here.</p>
<h2>ROC curves (test split)</h2>{roc_img}
<h2>Learning curves and test figures</h2>{figures}
<h2>Data</h2>{dataset_summary(manifest, rejected)}
<h2>MLflow runs</h2><table><tr><th>model</th><th>run id</th></tr>{run_ids}</table>
<h2>Configuration</h2><pre>{_esc(yaml.safe_dump(config, sort_keys=False))}</pre>
</body></html>"""
    with atomic_path(out_html) as tmp:
        tmp.write_text(page, encoding="utf-8")
