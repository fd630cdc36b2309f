"""End to end: the real Snakemake DAG on a tiny generated sample, up to the arrays."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY, score_cli, snakemake

from pneumoflow.models import thresholds
from pneumoflow.sources.synthetic import generate

pytestmark = pytest.mark.e2e


def _split_arrays(results: Path, size: int, split: str) -> dict[str, np.ndarray]:
    parts = [
        np.load(p, allow_pickle=False) for p in sorted((results / f"arrays/{size}px/{split}").glob("*.npz"))
    ]
    assert len(parts) == 2  # one per shard
    return {k: np.concatenate([p[k] for p in parts]) for k in ("images", "masks", "labels", "patient_ids")}


def test_manifest_and_split(tiny_run):
    manifest = pd.read_csv(tiny_run / "results/manifest.tsv", sep="\t")
    assert len(manifest) == 30 and manifest.patientId.is_unique
    assert set(manifest.split) == {"train", "val", "test"}
    assert set(manifest["class"]) == {"Lung Opacity", "No Lung Opacity / Not Normal", "Normal"}
    rejected = pd.read_csv(tiny_run / "results/qc/rejected.tsv", sep="\t")
    assert list(rejected.columns) == ["stage", "source", "patientId", "reason"] and rejected.empty


@pytest.mark.parametrize("size", [32, 64])
def test_arrays_shapes_dtypes_and_disjoint_splits(tiny_run, size):
    manifest = pd.read_csv(tiny_run / "results/manifest.tsv", sep="\t")
    seen: set[str] = set()
    for split in ("train", "val", "test"):
        arrays = _split_arrays(tiny_run / "results", size, split)
        n = len(arrays["patient_ids"])
        assert arrays["images"].shape == (n, size, size) and arrays["images"].dtype == np.uint8
        assert arrays["masks"].shape == (n, size, size) and arrays["masks"].max() <= 1
        ids = set(arrays["patient_ids"])
        assert ids == set(manifest.patientId[manifest.split == split])
        assert not ids & seen
        seen |= ids
        expected = manifest.set_index("patientId").loc[arrays["patient_ids"], "target"].to_numpy()
        np.testing.assert_array_equal(arrays["labels"], expected)
    assert len(seen) == 30


def test_masks_line_up_with_boxes(tiny_run):
    results = tiny_run / "results"
    manifest = pd.read_csv(results / "manifest.tsv", sep="\t").set_index("patientId")
    labels = pd.read_csv(tiny_run / "data/synthetic/stage_2_train_labels.csv")
    positives = labels[labels.Target == 1].groupby("patientId")
    assert len(positives) >= 3
    for pid, boxes in positives:
        mask = cv2.imread(str(results / f"masks/{manifest.shard[pid]:02d}/{pid}.png"), cv2.IMREAD_GRAYSCALE)
        expected = np.zeros((256, 256), np.uint8)
        for b in boxes.itertuples():
            expected[int(b.y) : int(b.y + b.height), int(b.x) : int(b.x + b.width)] = 255
        np.testing.assert_array_equal(mask, expected)
    # and in the 64 px arrays, the mask of the first positive covers its scaled box
    pid, boxes = next(iter(positives))
    arrays = _split_arrays(results, 64, manifest.split[pid])
    mask = arrays["masks"][list(arrays["patient_ids"]).index(pid)]
    for b in boxes.itertuples():
        cx, cy = int((b.x + b.width / 2) / 4), int((b.y + b.height / 2) / 4)
        assert mask[cy, cx] == 1
    box_area = sum(b.width * b.height for b in boxes.itertuples()) / 16  # upper bound: boxes may overlap
    assert 0.5 * box_area <= mask.sum() <= box_area + 4 * 64


def test_every_job_logged_and_no_patient_name_leaks(tiny_run):
    for rule in (
        "manifest/manifest.log",
        "synthetic_sample.log",
        "dicom_to_jpg/00.log",
        "arrays/64px/val/01.log",
    ):
        assert (tiny_run / "logs" / rule).stat().st_size > 0, rule
    needle = b"Fakename"
    for folder in ("results", "logs"):
        for path in (tiny_run / folder).rglob("*"):
            assert path.is_dir() or needle not in path.read_bytes(), path


def test_second_dry_run_has_nothing_to_do(tiny_run):
    result = snakemake(tiny_run, "--configfile", str(TINY), "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def planned_jobs(output: str) -> dict[str, int]:
    """{rule: count} from the 'Job stats' table of a snakemake dry run ({} when nothing to do)."""
    jobs, in_table = {}, False
    for line in output.splitlines():
        words = line.split()
        if line.startswith("-----"):
            in_table = True
        elif in_table and len(words) == 2 and words[1].isdigit() and words[0] != "total":
            jobs[words[0]] = int(words[1])
        elif in_table:
            break
    return jobs


def dry_run_with(workdir: Path, tmp_path: Path, model: str, key: str, value) -> subprocess.CompletedProcess:
    """`snakemake -n` after setting models.<model>.<key> = value in the tiny config."""
    config = yaml.safe_load(TINY.read_text())
    config["models"][model][key] = value
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    return snakemake(workdir, "--configfile", str(changed), "-n")


def test_changing_a_model_size_reruns_only_its_arrays(tiny_run, tmp_path):
    result = dry_run_with(tiny_run, tmp_path, "unet", "img_size", 48)
    assert result.returncode == 0, result.stderr[-3000:]
    # 3 splits x 2 shards at the new size, the U-Net's training, post-processing, evaluation
    # and submission, and the report that compares all models: nothing upstream, no classifier
    expected = {
        "arrays": 6, "train_unet": 1, "postprocess": 1, "evaluate": 1, "submission": 1, "report": 1, "all": 1,
    }  # fmt: skip
    assert planned_jobs(result.stdout + result.stderr) == expected
    assert "results/arrays/48px/train/00.npz" in result.stdout + result.stderr


def test_changing_one_classifier_reruns_only_its_training(tiny_run, tmp_path):
    result = dry_run_with(tiny_run, tmp_path, "resnet101", "lr", 0.005)
    out = result.stdout + result.stderr
    assert planned_jobs(out) == {"train_resnet101": 1, "evaluate": 1, "report": 1, "all": 1}
    assert "output: results/eval/resnet101/metrics.json" in out
    assert "output: results/eval/vgg16" not in out and "output: results/eval/unet" not in out


def test_changing_the_gate_classifier_also_reruns_the_unet_boxes(tiny_run, tmp_path):
    """VGG16 gates the U-Net's boxes (postprocess.gate_with): its chain and the boxes' rerun, not
    the U-Net's training."""
    result = dry_run_with(tiny_run, tmp_path, "vgg16", "lr", 0.005)
    out = result.stdout + result.stderr
    assert planned_jobs(out) == {
        "train_vgg16": 1, "postprocess": 1, "evaluate": 2, "submission": 1, "report": 1, "all": 1,
    }  # fmt: skip
    assert "output: results/eval/unet/metrics.json" in out and "output: results/eval/resnet101" not in out


@pytest.mark.parametrize(
    "override, message",
    [
        ({"preprocess": {"shard": 4}}, "Additional properties are not allowed ('shard' was unexpected)"),
        ({"split": {"seed": "forty-two"}}, "'forty-two' is not of type 'integer'"),
        ({"data": {"source": "kaggle"}}, "'kaggle' is not one of ['synthetic', 'rsna', 'imagefolder']"),
        ({"models": {"vgg16": {"cache_features": "yes"}}}, "'yes' is not one of ['auto', True, False]"),
        ({"data": {"source": "imagefolder"}}, "data.imagefolder_dir is not set"),
        ({"preprocess": {"shards": "many"}}, "'many' does not match '^auto$'"),
    ],
)
def test_bad_config_stops_naming_the_key(tmp_path, override, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(override))
    result = snakemake(tmp_path, "--configfile", str(bad), "-n")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("n_images, shards", [(30, 1), (4001, 2)])
def test_auto_shards_follow_the_image_count(tmp_path, n_images, shards):
    config = tmp_path / "auto.yaml"
    config.write_text(yaml.safe_dump({"data": {"synthetic": {"n_images": n_images}}}))
    result = snakemake(tmp_path, "--configfile", str(config), "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = re.search(r"^dicom_to_jpg\s+(\d+)$", result.stdout, re.MULTILINE)
    assert jobs and int(jobs.group(1)) == shards, result.stdout[-3000:]


def test_rsna_source_refuses_a_bad_dicom_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the store is results/mlflow.db
    data = tmp_path / "rsna"
    generate(data, n=20, seed=11, size=128)
    victim = sorted((data / "stage_2_train_images").glob("*.dcm"))[0]
    victim.write_bytes(b"\x00" * 50)
    config = tmp_path / "rsna.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"source": "rsna", "rsna_dir": str(data)},
                "preprocess": {"shards": 2},
                "qc": {"max_rejected_fraction": 0.1},
                "models": {
                    "unet": {"enabled": False},
                    "vgg16": {"img_size": 32},
                    "resnet101": {"img_size": 32},
                    "baseline": {"img_size": 32},
                },
            }
        )
    )
    # preprocessing only: this test is about refusals (the files as targets: `--until` and
    # `--omit-from` stop at the checkpoints on a fresh run)
    arrays = [
        f"results/arrays/32px/{split}/{s:02d}.npz" for split in ("train", "val", "test") for s in range(2)
    ]
    result = snakemake(tmp_path / "work", *arrays, "results/qc/rejected.tsv", "--configfile", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    rejected = pd.read_csv(tmp_path / "work/results/qc/rejected.tsv", sep="\t")
    assert list(rejected.patientId) == [victim.stem] and "DICOM" in rejected.reason[0]
    assert sorted(p.name for p in (tmp_path / "work/results/arrays").iterdir()) == ["32px"]
    manifest = pd.read_csv(tmp_path / "work/results/manifest.tsv", sep="\t")
    assert len(manifest) == 19
    # no job of this run logs to MLflow, so onstart opened no store (its schema costs seconds)
    assert not (tmp_path / "work/results/mlflow.db").exists()


def test_too_many_refusals_stop_the_manifest_and_keep_the_list(tmp_path):
    data = tmp_path / "rsna"
    generate(data, n=10, seed=12, size=128)
    for victim in sorted((data / "stage_2_train_images").glob("*.dcm"))[:2]:
        victim.write_bytes(b"garbage")
    config = tmp_path / "rsna.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": "rsna", "rsna_dir": str(data)}}))
    result = snakemake(tmp_path / "work", "--configfile", str(config))
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "2 of 10 images (20.0%) were refused" in out and "logs/manifest/rejected.tsv" in out
    assert len(pd.read_csv(tmp_path / "work/logs/manifest/rejected.tsv", sep="\t")) == 2
    assert not (tmp_path / "work/results/manifest.tsv").exists()


def test_missing_rsna_folder_is_named(tmp_path):
    config = tmp_path / "rsna.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": "rsna", "rsna_dir": str(tmp_path / "nowhere")}}))
    result = snakemake(tmp_path, "--configfile", str(config), "-n")
    assert result.returncode != 0
    assert "has no stage_2_train_images/ folder" in result.stdout + result.stderr


def _mlflow_runs(workdir: Path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/results/mlflow.db")
    experiment = client.get_experiment_by_name("pneumonia")
    return client, client.search_runs([experiment.experiment_id])


def _logged_model_runs(client) -> set[str]:
    """Run ids that logged an MLflow model (MLflow 3 keeps models beside, not inside, runs)."""
    experiment = client.get_experiment_by_name("pneumonia")
    return {m.source_run_id for m in client.search_logged_models(experiment_ids=[experiment.experiment_id])}


def test_classifiers_trained_and_tracked(tiny_run, monkeypatch):
    monkeypatch.chdir(tiny_run)  # the store's artifact paths are relative to the project folder
    client, runs = _mlflow_runs(tiny_run)
    by_name = {r.info.run_name: r for r in runs}
    parent = next(r for r in runs if r.data.tags.get("pneumoflow.kind") == "pipeline")
    for model in ("vgg16", "resnet101"):
        folder = tiny_run / "results/models" / model
        history = pd.read_csv(folder / "history.csv")
        assert list(history.epoch) == list(range(15))
        assert {"train_loss", "val_loss", "train_acc", "val_acc"} <= set(history.columns)
        assert history.train_loss.iloc[-1] < history.train_loss[0]  # a short run on the sample learns
        assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"
        run = by_name[model]
        assert (folder / "mlflow_run_id.txt").read_text() == run.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.params["img_size"] == "32" and run.data.params["split_seed"] == "42"
        assert run.data.params["weights_hash"] == "none" and len(run.data.params["manifest_hash"]) == 16
        tags = run.data.tags
        assert tags["pneumoflow.rule"] == f"train_{model}" and tags["pneumoflow.data_source"] == "synthetic"
        assert len(tags["pneumoflow.git_commit"]) >= 7 and "linear probe" in tags["pneumoflow.head"]
        assert tags["pneumoflow.pipeline_run_id"] == parent.info.run_id  # top level, linked by tag
        val_acc = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in val_acc] == list(range(15))
        assert list(history.val_acc) == pytest.approx([m.value for m in val_acc])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"outputs"} <= artifacts
        assert "outputs/model.pt" not in {a.path for a in client.list_artifacts(run.info.run_id, "outputs")}
        assert run.info.run_id in _logged_model_runs(client)  # the one copy of model.pt
        assert not (tiny_run / "results/checkpoints" / model / "last.pt").exists()
        saved = torch.load(folder / "model.pt", weights_only=True)
        assert saved["head"] == "probe" and saved["img_size"] == 32 and 0 < saved["threshold"] < 1
        assert client.get_metric_history(run.info.run_id, "threshold")[0].value == pytest.approx(
            saved["threshold"]
        )
        val = pd.read_csv(folder / "val_predictions.csv")
        assert len(val) == int(run.data.params["n_val"])
        assert saved["threshold"] == pytest.approx(
            thresholds.youden_threshold(val.label.values, val.probability.values)
        )
    assert parent.info.status == "FINISHED"


def test_classifiers_beat_the_majority_class_at_their_val_threshold(tiny_run):
    """The tiny sample's test split: each deep classifier and the baseline separate it better than
    calling every image the majority class, at the threshold chosen on val."""
    for model in ("vgg16", "resnet101", "baseline"):
        result = json.loads((tiny_run / f"results/eval/{model}/metrics.json").read_text())
        (tn, fp), (fn, tp) = result["confusion_matrix"]
        majority = max(tn + fp, fn + tp) / result["n_test"]
        assert result["accuracy"] > majority or result["roc_auc"] == 1.0, (model, result)
        assert result["roc_auc"] > 0.5, (model, result)
        assert result["threshold_rule"] == "youden_j_on_val"


def test_predict_uses_the_threshold_saved_with_each_classifier(tiny_run, tmp_path):
    images = sorted((tiny_run / "data/synthetic/stage_2_train_images").glob("*.dcm"))[:6]
    out = tmp_path / "predictions.csv"
    result = subprocess.run(
        [sys.executable, "-m", "pneumoflow", "predict", *map(str, images), "--models",
         str(tiny_run / "results/models"), "--out", str(out)],
        capture_output=True, text=True, cwd=tiny_run,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_csv(out)
    for model in ("vgg16", "resnet101"):
        threshold = torch.load(tiny_run / f"results/models/{model}/model.pt", weights_only=True)["threshold"]
        assert (table[f"{model}_pneumonia"] == (table[f"{model}_probability"] >= threshold)).all()


def test_unet_trained_and_tracked(tiny_run):
    folder = tiny_run / "results/models/unet"
    history = pd.read_csv(folder / "history.csv")
    assert list(history.epoch) == [0, 1]
    assert {"loss", "val_loss", "dice_coefficient", "val_dice_coefficient", "val_mean_iou"} <= set(
        history.columns
    )
    for name in ("loss.png", "dice.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    assert any((folder / "tensorboard").rglob("events.out.tfevents.*"))
    import keras

    model = keras.models.load_model(folder / "model.keras", compile=False)
    assert model.output_shape == (None, 64, 64, 2)
    client, runs = _mlflow_runs(tiny_run)
    run = next(r for r in runs if r.info.run_name == "unet")
    assert (folder / "mlflow_run_id.txt").read_text() == run.info.run_id
    assert run.data.params["img_size"] == "64" and run.data.tags["pneumoflow.rule"] == "train_unet"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_dice")] == [0, 1]
    assert _logged_model_runs(client) >= {run.info.run_id}


def test_evaluation_metrics_json_and_mlflow(tiny_run):
    client, runs = _mlflow_runs(tiny_run)
    by_name = {r.info.run_name: r for r in runs}
    for model, keys in {
        "unet": {
            "dice",
            "iou",
            "mean_iou_2class",
            "mean_dice_positive",
            "empty_rate_negative",
            "rsna_score_raw",
            "rsna_score",
            "image_roc_auc",
        },  # fmt: skip
        "baseline": {"accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "confusion_matrix"},
        "vgg16": {"accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "confusion_matrix"},
        "resnet101": {"accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "confusion_matrix"},
    }.items():
        result = json.loads((tiny_run / f"results/eval/{model}/metrics.json").read_text())
        assert keys <= set(result) and result["n_test"] == 5
        logged = by_name[model].data.metrics
        for key in keys - {"confusion_matrix"}:
            if result[key] == result[key]:  # NaN (one class missing) is not logged
                assert logged[f"test_{key}"] == pytest.approx(result[key])
        if model != "unet":
            assert sum(map(sum, result["confusion_matrix"])) == 5
        else:
            # an all-background prediction scores Dice 0 on a test split with opacities
            assert result["dice"] > 0 and result["mean_dice_positive"] > 0
        assert (tiny_run / f"results/eval/{model}/roc.png").read_bytes()[:4] == b"\x89PNG"


def test_unet_predictions_score_the_same_with_the_cli(tiny_run):
    result = json.loads((tiny_run / "results/eval/unet/metrics.json").read_text())
    out = score_cli(
        tiny_run / "results/eval/unet/predictions.csv", tiny_run / "data/synthetic/stage_2_train_labels.csv"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"RSNA score {result['rsna_score']:.4f} over 5 images"


def test_report_has_every_section_and_model(tiny_run):
    page = (tiny_run / "results/report/report.html").read_text()
    for section in ("Test metrics", "ROC curves", "Learning curves", "Data", "MLflow runs", "Configuration"):
        assert f"<h2>{section}" in page
    for model in ("unet", "vgg16", "resnet101", "baseline"):
        run_id = (tiny_run / f"results/models/{model}/mlflow_run_id.txt").read_text()
        assert f"<td>{model}</td><td>{run_id}</td>" in page
    assert "0.9528" in page and "0.8460" in page  # the seed study's figures, labelled
    assert "<td>mean IoU (2 classes, as Keras MeanIoU)</td>" in page and "IoU (opacity only)" in page
    assert "RSNA score, raw boxes" in page and "RSNA score, post-processed (tuned on val)" in page
    assert "threshold (Youden&#x27;s J on val)" in page and "&id0" not in page
    assert page.count("data:image/png;base64,") >= 8  # self-contained
    assert "Fakename" not in page


def test_deleted_models_are_restored_from_mlflow_not_retrained(tiny_run):
    files = {"vgg16": "model.pt", "resnet101": "model.pt", "unet": "model.keras", "baseline": "model.json"}
    before = {m: (tiny_run / f"results/models/{m}/{f}").read_bytes() for m, f in files.items()}
    shutil.rmtree(tiny_run / "results/models")
    result = snakemake(tiny_run, "--configfile", str(TINY))
    assert result.returncode == 0, result.stderr[-3000:]
    for model, data in before.items():
        log = (tiny_run / f"logs/train_{model}.log").read_text()
        assert "restored outputs from MLflow run" in log and not re.search(r"poch 1/(2|15)", log)
        assert (tiny_run / f"results/models/{model}/{files[model]}").read_bytes() == data


def test_snakemake_report_builds(tiny_run):
    result = snakemake(tiny_run, "--configfile", str(TINY), "--report", "results/snakemake-report.html")
    assert result.returncode == 0, result.stderr[-2000:]
    page = (tiny_run / "results/snakemake-report.html").read_text()
    assert "Evaluation" in page and "Training" in page  # the report() categories


def test_postprocessing_is_tuned_on_val_only(tiny_run):
    """The postprocess job's inputs hold the val arrays and the gate's val probabilities, and
    nothing of the test split (no test arrays, no test predictions)."""
    result = snakemake(
        tiny_run, "--configfile", str(TINY), "-n", "-f", "results/models/unet/postprocess.json"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    block = re.search(r"rule postprocess:\n(.*?)\n\n", result.stdout + "\n\n", re.S).group(1)
    inputs = re.search(r"input: (.*)", block).group(1).split(", ")
    assert any("/arrays/64px/val/" in p for p in inputs)
    assert "results/models/vgg16/val_predictions.csv" in inputs
    assert not [p for p in inputs if "/test/" in p or p.startswith("results/eval/")]
    tuned = json.loads((tiny_run / "results/models/unet/postprocess.json").read_text())
    assert tuned["n_val"] == len(_split_arrays(tiny_run / "results", 64, "val")["labels"])
    sweep = pd.read_csv(tiny_run / "results/models/unet/postprocess_sweep.csv")
    assert tuned["val_rsna_score"] == pytest.approx(sweep.rsna_score.max())
