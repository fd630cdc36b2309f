"""The MLflow UI and the report as a user meets them, on the tiny run's store.

`pneumoflow ui` (what `make ui` runs) serves the store on a loopback port; its REST API must
hold the training runs, metrics, datasets and registered versions, and headless Chromium must
render the experiment page on the model runs and report.html with every section and image.
The browser checks skip, saying why, only where Debian's chromium is missing outside CI.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import requests
from conftest import free_port

from pneumoflow.tracking import ui as mlflow_ui
from pneumoflow.tracking.registry import ALIAS
from pneumoflow.tracking.run_cache import hash_files

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
CLASSIFIERS = ("vgg16", "resnet101")
TRAINED = ("unet", *CLASSIFIERS)


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    why = "Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"{why}: under CI the real-browser checks of the MLflow UI and the report must run")
    pytest.skip(f"{why}: the real-browser checks of the MLflow UI and the report cannot run here")


def _env() -> dict[str, str]:
    """This checkout's package first (subprocesses run in the tiny run's folder), no test URI."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def ui(tiny_run):
    """(base URL, the URL `pneumoflow ui` printed) of the UI it serves from the tiny run's folder."""
    port = free_port()
    log = open(tiny_run / "ui.log", "w")  # noqa: SIM115 (open while the server runs)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pneumoflow", "ui", "--port", str(port)],
        cwd=tiny_run, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            try:
                if requests.get(f"{base}/health", timeout=2).ok:
                    break
            except requests.RequestException:  # not listening yet, or still starting
                time.sleep(1)
        else:
            pytest.fail("pneumoflow ui did not start:\n" + (tiny_run / "ui.log").read_text()[-3000:])
        printed = re.search(r"open (\S+)", (tiny_run / "ui.log").read_text()).group(1)
        yield base, printed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)  # mlflow ui starts uvicorn workers in its session
            proc.wait(timeout=30)
        log.close()


def _api(base: str, endpoint: str, **params) -> dict:
    response = requests.get(f"{base}/api/2.0/mlflow/{endpoint}", params=params, timeout=30)
    assert response.ok, (endpoint, response.text[:500])
    return response.json()


def _runs(base: str, exp_id: str) -> dict[str, dict]:
    search = {"experiment_ids": [exp_id], "max_results": 100}
    response = requests.post(f"{base}/api/2.0/mlflow/runs/search", json=search, timeout=30)
    assert response.ok, response.text[:500]
    runs = {}
    for run in response.json()["runs"]:  # the newest first: keep the newest of each name
        runs.setdefault(run["info"]["run_name"], run)
    return runs


def _render(chromium: str, url: str, out: Path) -> str:
    """The page's DOM after Chromium ran its scripts (20 s of virtual time), as visible text."""
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1920,1080",
        "--virtual-time-budget=20000", "--dump-dom", url,
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    out.write_text(result.stdout)
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", result.stdout, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def test_rest_api_holds_runs_metrics_datasets_and_registered_versions(ui, tiny_run):
    base, printed = ui
    experiment = _api(base, "experiments/get-by-name", experiment_name="pneumonia")["experiment"]
    exp_id = experiment["experiment_id"]
    tags = {t["key"]: t["value"] for t in experiment["tags"]}
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert mlflow_ui.VIEW_TAG in tags
    assert experiment["artifact_location"] == "results/mlartifacts"  # moves with the folder
    assert printed == mlflow_ui.experiment_url(base, exp_id)
    runs = _runs(base, exp_id)
    for model in (*TRAINED, "baseline"):
        run = runs[model]
        run_tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert "mlflow.parentRunId" not in run_tags  # top level: one row per model in the UI
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        result = json.loads((tiny_run / f"results/eval/{model}/metrics.json").read_text())
        key = "rsna_score" if model == "unet" else "roc_auc"
        assert metrics[f"test_{key}"] == pytest.approx(result[key])
        size = int({p["key"]: p["value"] for p in run["data"]["params"]}["img_size"])
        inputs = {
            {t["key"]: t["value"] for t in d["tags"]}["mlflow.data.context"]: d["dataset"]
            for d in run["inputs"]["dataset_inputs"]
        }
        assert set(inputs) == {"train", "val", "test"}, model
        for split, dataset in inputs.items():
            assert dataset["name"] == f"{split} {size}px"
            files = sorted((tiny_run / f"results/arrays/{size}px/{split}").glob("*.npz"))
            assert dataset["digest"] == hash_files(files)[:16]
            assert json.loads(dataset["source"])["uri"] == "results/manifest.tsv"
    for model in TRAINED:
        run_id = runs[model]["info"]["run_id"]
        assert (tiny_run / f"results/models/{model}/mlflow_run_id.txt").read_text() == run_id
        history = _api(base, "metrics/get-history", run_id=run_id, metric_key="val_loss")["metrics"]
        assert len(history) == (2 if model == "unet" else 15)
        metrics = {m["key"] for m in runs[model]["data"]["metrics"]}
        assert "system/cpu_utilization_percentage" in metrics  # mlflow.system_metrics
        registered = _api(base, "registered-models/get", name=f"pneumoflow-{model}")["registered_model"]
        alias = {a["alias"]: a["version"] for a in registered["aliases"]}[ALIAS]
        version = _api(base, "model-versions/get", name=f"pneumoflow-{model}", version=alias)
        assert version["model_version"]["run_id"] == run_id


def test_each_model_is_stored_once(ui, tiny_run):
    """Each model file is in the store once (in its logged model), not twice."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_run}/results/mlflow.db")
    for model in TRAINED:
        name = "model.keras" if model == "unet" else "model.pt"
        run = client.get_run((tiny_run / f"results/models/{model}/mlflow_run_id.txt").read_text())
        logged = client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        folders = [tiny_run / run.info.artifact_uri, *(tiny_run / m.artifact_location for m in logged)]
        files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
        copies = [p for p in files if p.name == name]
        model_file = tiny_run / f"results/models/{model}/{name}"
        assert len(copies) == 1 and copies[0].read_bytes() == model_file.read_bytes(), copies
        # and nowhere else in another form (a pickled model, say): the rest is small
        others = {str(p.relative_to(tiny_run)): p.stat().st_size for p in files if p != copies[0]}
        assert sum(others.values()) < 2e6 and sum(others.values()) < model_file.stat().st_size / 4, others


def _predict(tiny_run: Path, images: list[Path], models: str, out: Path) -> subprocess.CompletedProcess:
    """`pneumoflow predict` run from the tiny run's folder, as a user runs it."""
    command = [sys.executable, "-m", "pneumoflow", "predict", *images, "--models", models, "--out", out]
    return subprocess.run(command, capture_output=True, text=True, cwd=tiny_run, env=_env())


def test_predict_loads_a_registered_model(ui, tiny_run, tmp_path):
    images = sorted((tiny_run / "data/synthetic/stage_2_train_images").glob("*.dcm"))[:4]
    tables = {}
    for source in ("results/models", f"models:/pneumoflow-vgg16@{ALIAS}"):
        out = tmp_path / f"{len(tables)}.csv"
        result = _predict(tiny_run, images, source, out)
        assert result.returncode == 0, result.stderr[-2000:]
        tables[source] = pd.read_csv(out)
    from_registry = tables[f"models:/pneumoflow-vgg16@{ALIAS}"]
    assert [c for c in from_registry.columns if c.startswith(("vgg16", "resnet", "unet"))] == [
        "vgg16_probability",
        "vgg16_pneumonia",
    ]
    assert from_registry.vgg16_probability.tolist() == tables["results/models"].vgg16_probability.tolist()


def test_a_registered_unet_brings_the_box_settings_tuned_for_it(tiny_run, tmp_path):
    """models:/pneumoflow-unet@current comes with the postprocess.json that rule postprocess
    tuned for that version, so predict draws the pipeline's boxes, not default ones."""
    uri = f"models:/pneumoflow-unet@{ALIAS}"
    fetch = "import sys, pneumoflow.tracking.model_files as m; m.download_registered(*sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", fetch, uri, str(tmp_path / "fetched"), "sqlite:///results/mlflow.db"],
        capture_output=True, text=True, cwd=tiny_run, env=_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    tuned = tiny_run / "results/models/unet/postprocess.json"
    assert (tmp_path / "fetched/unet/postprocess.json").read_text() == tuned.read_text()
    # the same boxes as the pipeline's own U-Net folder, without a gate classifier beside it
    shutil.copytree(tiny_run / "results/models/unet", tmp_path / "local/unet")
    images = sorted((tiny_run / "data/synthetic/stage_2_train_images").glob("*.dcm"))[:6]
    tables = []
    for source in (str(tmp_path / "local"), uri):
        out = tmp_path / f"{len(tables)}.csv"
        result = _predict(tiny_run, images, source, out)
        assert result.returncode == 0, result.stderr[-2000:]
        tables.append(pd.read_csv(out, keep_default_na=False))
    assert f"box settings of {uri}: postprocess.json of run" in result.stderr, result.stderr[-2000:]
    assert tables[1].PredictionString.tolist() == tables[0].PredictionString.tolist()
    assert tables[1].unet_probability.tolist() == tables[0].unet_probability.tolist()


def test_experiment_page_opens_on_the_model_runs(ui, chromium, tiny_run, tmp_path):
    base, printed = ui
    text = _render(chromium, printed, tmp_path / "experiment.html")
    assert "Model comparison" in text and "Sort: test_roc_auc" in text, text[:2000]
    assert "Detect Issues" not in text and "Token Usage" not in text  # not the GenAI overview
    for model in (*TRAINED, "baseline"):
        assert re.search(rf"\b{model}\b", text), (model, text[:3000])
        if model != "baseline":  # the Models column names the registered version
            assert f"pneumoflow-{model} v" in text, (model, text[:3000])
    assert "unet_postprocess" not in text and "pipeline 20" not in text  # training runs only
    assert "train 32px" in text and "test 64px" in text  # the Dataset column
    for column in ("test_roc_auc", "test_accuracy", "img_size"):
        assert column in text, (column, text[:3000])
    roc_auc = json.loads((tiny_run / "results/eval/vgg16/metrics.json").read_text())["roc_auc"]
    assert (str(roc_auc) if roc_auc != int(roc_auc) else str(int(roc_auc))) in text, (roc_auc, text[:3000])


# Appended to a copy of the report: Chromium writes what it rendered into the page.
_CHECK = """<script>window.addEventListener("load", () => {
  const imgs = [...document.images];
  const out = {sections: [...document.querySelectorAll("h2")].map(h => h.textContent),
               images: imgs.length,
               broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
               config: document.querySelector("pre").innerText};
  const pre = document.createElement("pre"); pre.id = "check"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def test_report_renders_every_section_and_image(chromium, tiny_run, tmp_path):
    page = (tiny_run / "results/report/report.html").read_text()
    (tmp_path / "report.html").write_text(page.replace("</body>", _CHECK + "</body>"))
    _render(chromium, (tmp_path / "report.html").as_uri(), tmp_path / "rendered.html")
    found = re.search(r'<pre id="check">(.*?)</pre>', (tmp_path / "rendered.html").read_text(), re.S)
    assert found, "the check script did not run"
    rendered = json.loads(html.unescape(found.group(1)))
    for section in ("Test metrics", "ROC curves", "Learning curves", "Data", "MLflow runs", "Configuration"):
        assert any(s.startswith(section) for s in rendered["sections"]), (section, rendered["sections"])
    assert rendered["images"] >= 8 and rendered["broken"] == []
    config = rendered["config"]
    assert "&id" not in config and "*id" not in config
    assert "img_size: 32" in config and "epochs: 15" in config  # plain values, as configured
