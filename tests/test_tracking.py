"""MLflow tracking against the sqlite default and a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from conftest import free_port

from pneumoflow.tracking import model_run, run_cache
from pneumoflow.tracking.client import connect, end_parent_run, experiment_id, start_parent_run
from pneumoflow.tracking.model_run import TrackingUnavailableError
from pneumoflow.tracking.settings import TrackingSettings


@pytest.fixture
def sqlite_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(model_run.PARENT_ENV, raising=False)
    return TrackingSettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="test")


def _work(outputs, values):
    def work(run):
        for step, value in enumerate(values):
            run.log_metrics({"train_loss": value, "val_loss": value + 1}, step=step)
        for path in outputs.values():
            Path(path).write_text(f"trained {values}")

    return work


def _run(settings, tmp_path, fp_parts, values=(3.0, 2.0)):
    outputs = {"model.txt": tmp_path / "out" / "model.txt", "history.csv": tmp_path / "out" / "history.csv"}
    (tmp_path / "out").mkdir(exist_ok=True)
    calls = []
    work = _work(outputs, values)
    run_id = run_cache.run_tracked(
        settings,
        name="vgg16",
        params={"lr": 0.001, "epochs": 2},
        tags={"pneumoflow.rule": "train_vgg16"},
        fingerprint_parts=fp_parts,
        outputs=outputs,
        run_id_out=tmp_path / "out" / "run_id.txt",
        work=lambda run: (calls.append(1), work(run)),
    )
    return run_id, outputs, calls


def test_run_logs_params_metrics_tags_and_outputs(sqlite_settings, tmp_path):
    run_id, outputs, calls = _run(sqlite_settings, tmp_path, {"cfg": 1})
    client = connect(sqlite_settings)
    run = client.get_run(run_id)
    assert run.info.run_name == "vgg16" and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.001", "epochs": "2"}
    assert run.data.tags["pneumoflow.rule"] == "train_vgg16"
    assert run.data.tags[run_cache.FINGERPRINT_TAG] == run_cache.fingerprint({"cfg": 1})
    history = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0)]
    assert sorted(a.path for a in client.list_artifacts(run_id, "outputs")) == [
        "outputs/history.csv",
        "outputs/model.txt",
    ]
    assert (tmp_path / "out" / "run_id.txt").read_text() == run_id
    # artifacts sit beside the sqlite file
    assert (tmp_path / "mlartifacts").is_dir()


def test_cache_restores_outputs_and_skips_work(sqlite_settings, tmp_path):
    first, outputs, calls = _run(sqlite_settings, tmp_path, {"cfg": 1, "data": "abc"})
    assert calls == [1]
    for path in outputs.values():
        path.unlink()
    second, outputs, calls = _run(sqlite_settings, tmp_path, {"cfg": 1, "data": "abc"}, values=(9.0,))
    assert calls == [] and second == first
    assert outputs["model.txt"].read_text() == "trained (3.0, 2.0)"  # restored, not retrained
    third, _, calls = _run(sqlite_settings, tmp_path, {"cfg": 1, "data": "abd"})
    assert calls == [1] and third != first


def test_cache_off_always_trains(sqlite_settings, tmp_path):
    settings = TrackingSettings(sqlite_settings.tracking_uri, "test", reuse_runs=False)
    _run(settings, tmp_path, {"cfg": 1})
    _, _, calls = _run(settings, tmp_path, {"cfg": 1})
    assert calls == [1]


def test_failed_work_marks_run_failed_and_is_not_reused(sqlite_settings, tmp_path):
    def boom(run):
        raise ValueError("diverged")

    with pytest.raises(ValueError):
        run_cache.run_tracked(
            sqlite_settings,
            name="unet",
            params={},
            tags={},
            fingerprint_parts={"x": 1},
            outputs={},
            run_id_out=tmp_path / "id.txt",
            work=boom,
        )
    client = connect(sqlite_settings)
    exp = experiment_id(client, sqlite_settings)
    runs = client.search_runs([exp])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert run_cache.find_cached_run(client, exp, run_cache.fingerprint({"x": 1})) is None


def test_model_runs_are_top_level_and_name_their_pipeline_run(sqlite_settings, tmp_path, monkeypatch):
    """Nested runs show as one collapsed row without metrics in the UI: model runs stay top
    level, linked to their invocation's run by a tag."""
    parent = start_parent_run(sqlite_settings, "pipeline", {"pneumoflow.version": "x"})
    assert os.environ[model_run.PARENT_ENV] == parent
    child, _, _ = _run(sqlite_settings, tmp_path, {"cfg": 2})
    end_parent_run(sqlite_settings, parent, ok=True)
    client = connect(sqlite_settings)
    tags = client.get_run(child).data.tags
    assert tags[model_run.PIPELINE_TAG] == parent and "mlflow.parentRunId" not in tags
    assert client.get_run(parent).info.status == "FINISHED"


def test_experiment_opens_on_training_runs(sqlite_settings):
    """MLflow 3's UI opens an experiment on GenAI traces unless it is marked as model training."""
    from pneumoflow.tracking import ui as mlflow_ui

    client = connect(sqlite_settings)
    # experiments that predate the tags, or hold an older view, get them too
    client.create_experiment("made-elsewhere", tags={mlflow_ui.VIEW_TAG: '{"state": "{}"}'})
    for name in ("test", "made-elsewhere"):
        settings = TrackingSettings(sqlite_settings.tracking_uri, name)
        experiment = client.get_experiment(experiment_id(client, settings))
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        assert mlflow_ui.view_is_current(experiment.tags[mlflow_ui.VIEW_TAG])
    state = json.loads(json.loads(experiment.tags[mlflow_ui.VIEW_TAG])["state"])
    assert state["orderByKey"] == "metrics.`test_roc_auc`" and "params.`img_size`" in state["selectedColumns"]


def test_store_moves_with_the_project_folder(tmp_path, monkeypatch):
    """The default store's path is relative (sqlite:///results/mlflow.db): its artifact root is
    stored relative too, so a renamed project folder still restores from the run cache."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(model_run.PARENT_ENV, raising=False)
    settings = TrackingSettings(tracking_uri="sqlite:///results/mlflow.db", experiment="moved")
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    first, outputs, calls = _run(settings, tmp_path, {"cfg": "move"})
    client = connect(settings)
    assert client.get_experiment_by_name("moved").artifact_location == "results/mlartifacts"
    assert not Path(client.get_run(first).info.artifact_uri).is_absolute()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "project").rename(tmp_path / "renamed")
    monkeypatch.chdir(tmp_path / "renamed")
    for path in outputs.values():
        path.unlink()
    second, outputs, calls = _run(settings, tmp_path, {"cfg": "move"})
    assert calls == [] and second == first
    assert outputs["model.txt"].read_text() == "trained (3.0, 2.0)"


def test_system_metrics_are_sampled_during_the_run(sqlite_settings, tmp_path):
    settings = TrackingSettings(sqlite_settings.tracking_uri, "test", system_metrics_interval=0.2)
    run_id = run_cache.run_tracked(
        settings,
        name="vgg16",
        params={},
        tags={},
        fingerprint_parts={"sys": 1},
        outputs={},
        run_id_out=tmp_path / "id.txt",
        work=lambda run: time.sleep(1.5),
    )
    metrics = connect(settings).get_run(run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(metrics)
    off = TrackingSettings(
        sqlite_settings.tracking_uri, "test", system_metrics=False, system_metrics_interval=0.2
    )
    run_id = run_cache.run_tracked(
        off,
        name="vgg16",
        params={},
        tags={},
        fingerprint_parts={"sys": 2},
        outputs={},
        run_id_out=tmp_path / "id.txt",
        work=lambda run: time.sleep(1),
    )
    assert not any(k.startswith("system/") for k in connect(off).get_run(run_id).data.metrics)


def test_mlflow_tracking_uri_env_overrides_config(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/other.db")
    assert TrackingSettings(tracking_uri="sqlite:///nowhere.db").uri.endswith("other.db")


def _log_one(args):
    uri, name, root = args
    settings = TrackingSettings(tracking_uri=uri, experiment="parallel")
    out = Path(root) / name
    out.mkdir()
    return run_cache.run_tracked(
        settings,
        name=name,
        params={"m": name},
        tags={},
        fingerprint_parts={"m": name},
        outputs={"f.txt": out / "f.txt"},
        run_id_out=out / "id.txt",
        work=lambda run: ((out / "f.txt").write_text(name), run.log_metrics({"val_acc": 0.5}, step=0)),
    )


def test_three_processes_on_a_fresh_database(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/fresh.db"
    monkeypatch.delenv(model_run.PARENT_ENV, raising=False)
    parent = start_parent_run(TrackingSettings(tracking_uri=uri, experiment="parallel"), "pipeline", {})
    assert os.environ[model_run.PARENT_ENV] == parent  # what onstart does
    with ProcessPoolExecutor(3) as pool:
        ids = list(pool.map(_log_one, [(uri, m, str(tmp_path)) for m in ("unet", "vgg16", "resnet101")]))
    assert len(set(ids)) == 3 and all(ids)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    store, artifacts = f"sqlite:///{root}/server.db", str(root / "artifacts")
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        store,
        "--artifacts-destination",
        artifacts,
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "w"), env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start:\n" + (root / "server.log").read_text()[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_real_server_run_and_cache(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = TrackingSettings(tracking_uri=mlflow_server, experiment="server-test")
    first, outputs, calls = _run(settings, tmp_path, {"cfg": "server"})
    client = connect(settings)
    assert client.get_run(first).data.params["lr"] == "0.001"
    assert [m.value for m in client.get_metric_history(first, "val_loss")] == [4.0, 3.0]
    for path in outputs.values():
        path.unlink()
    second, outputs, calls = _run(settings, tmp_path, {"cfg": "server"})
    assert calls == [] and second == first and outputs["model.txt"].exists()


def test_unreachable_server_fails_naming_the_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.time()
    with pytest.raises(TrackingUnavailableError, match=f"{uri} cannot be reached.*mlflow.required: false"):
        connect(TrackingSettings(tracking_uri=uri))
    assert time.time() - start < 30  # no minutes of retries


def test_unreachable_server_not_required_goes_on_untracked(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = TrackingSettings(tracking_uri=f"http://127.0.0.1:{free_port()}", required=False)
    run_id, outputs, calls = _run(settings, tmp_path, {"cfg": 1})
    assert run_id is None and calls == [1] and outputs["model.txt"].exists()
    assert "WITHOUT tracking" in caplog.text
    assert (tmp_path / "out" / "run_id.txt").read_text() == ""


def test_system_metrics_setting_is_no_part_of_the_fingerprint(sqlite_settings, tmp_path):
    first, _, calls = _run(sqlite_settings, tmp_path, {"cfg": "sys"})
    off = TrackingSettings(sqlite_settings.tracking_uri, "test", system_metrics=False)
    second, _, calls = _run(off, tmp_path, {"cfg": "sys"})
    assert calls == [] and second == first  # restored: switching it retrains nothing


@pytest.mark.e2e
def test_a_baseline_only_run_opens_its_pipeline_run_and_links_the_baseline(tmp_path, monkeypatch):
    """onstart opens the parent run when any tracked rule is due (TRACKED_RULES), every deep
    model off: first for the baseline's training alone, then for its evaluation, which adds
    test metrics to the training run."""
    from conftest import snakemake
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the store is results/mlflow.db
    monkeypatch.delenv(model_run.PARENT_ENV, raising=False)
    config = tmp_path / "baseline.yaml"
    config.write_text(
        "data: {synthetic: {n_images: 24, image_size: 64}}\n"
        "preprocess: {shards: 1}\n"
        "models: {unet: {enabled: false}, vgg16: {enabled: false}, resnet101: {enabled: false},\n"
        "         baseline: {img_size: 32}}\n"
    )
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/work/results/mlflow.db")

    def runs(rule: str, *targets: str):
        result = snakemake(tmp_path / "work", *targets, "--configfile", str(config))
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"rule {rule}:" in result.stdout + result.stderr
        found = client.search_runs([client.get_experiment_by_name("pneumonia").experiment_id])
        pipelines = [r for r in found if r.data.tags.get("pneumoflow.kind") == "pipeline"]
        assert all(r.info.status == "FINISHED" for r in pipelines)
        (baseline,) = [r for r in found if r.data.tags.get("pneumoflow.rule") == "train_baseline"]
        return pipelines, baseline

    pipelines, baseline = runs("train_baseline", "results/models/baseline/model.json")
    assert len(pipelines) == 1 and baseline.info.status == "FINISHED"
    assert baseline.data.tags[model_run.PIPELINE_TAG] == pipelines[0].info.run_id
    assert not any(k.startswith("test_") for k in baseline.data.metrics)
    pipelines, baseline = runs("evaluate")  # the rest: evaluation and report
    assert len(pipelines) == 2  # its own pipeline run, though only the evaluation logs
    assert "test_roc_auc" in baseline.data.metrics


def test_a_registered_unets_box_settings_come_from_its_newest_finished_postprocess_run(
    sqlite_settings, tmp_path, caplog
):
    from pneumoflow.tracking.model_files import _download_tuned_postprocess

    client = connect(sqlite_settings)
    experiment = experiment_id(client, sqlite_settings)
    unet, other_unet = (client.create_run(experiment).info.run_id for _ in range(2))
    for start, unet_run, threshold, status in (
        (1000, unet, 0.3, "FINISHED"),
        (2000, unet, 0.4, "FINISHED"),  # the one to take
        (3000, unet, 0.6, "FAILED"),
        (4000, other_unet, 0.7, "FINISHED"),
    ):
        run = client.create_run(experiment, start_time=start, tags={model_run.UNET_RUN_TAG: unet_run})
        settings = tmp_path / f"{start}" / "postprocess.json"
        settings.parent.mkdir()
        settings.write_text(json.dumps({"threshold": threshold}))
        client.log_artifact(run.info.run_id, str(settings), model_run.OUTPUTS)
        client.set_terminated(run.info.run_id, status)
    for name in ("picked", "none", "unnamed"):
        (tmp_path / name).mkdir()
    _download_tuned_postprocess(client, "models:/pneumoflow-unet@current", unet, tmp_path / "picked")
    assert json.loads((tmp_path / "picked/postprocess.json").read_text()) == {"threshold": 0.4}
    # none tuned, or no training run named: a warning, no file, and predict's defaults
    _download_tuned_postprocess(client, "models:/pneumoflow-unet/3", "untuned", tmp_path / "none")
    _download_tuned_postprocess(client, "models:/pneumoflow-unet/4", None, tmp_path / "unnamed")
    assert not list((tmp_path / "none").iterdir()) and not list((tmp_path / "unnamed").iterdir())
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("pneumoflow-unet/3: no tuned box settings" in m and "untuned" in m for m in warned), warned
    assert any("pneumoflow-unet/4: no tuned box settings" in m for m in warned), warned
