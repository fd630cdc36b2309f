"""The report: data strings escaped, seed figures beside ours, the baseline and its flags, the
val-chosen threshold, raw and post-processed RSNA scores, the config as written."""

import json

import pandas as pd
import pytest

from pneumoflow.stages.report import baseline_flags, build_report, dataset_summary, metrics_table


def _manifest(folder):
    pd.DataFrame(
        {
            "patientId": ["p1"],
            "split": ["train"],
            "shard": [0],
            "target": [0],
            "class": ["Normal"],
            "n_boxes": [0],
            "view": ["PA"],
            "sex": ["F"],
            "age": [40],
            "rows": [8],
            "cols": [8],
        }
    ).to_csv(folder / "manifest.tsv", sep="\t", index=False)
    return folder / "manifest.tsv"


def test_data_strings_are_escaped(tmp_path):
    _manifest(tmp_path)
    pd.DataFrame(
        {
            "stage": ["manifest"],
            "source": ["x.dcm"],
            "patientId": ["<b>id</b>"],
            "reason": ["<script>alert(1)</script>"],
        }
    ).to_csv(tmp_path / "rejected.tsv", sep="\t", index=False)
    page = dataset_summary(tmp_path / "manifest.tsv", tmp_path / "rejected.tsv")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;id&lt;/b&gt;" in page and "1 refused inputs" in page


def test_metrics_table_puts_seed_figures_beside_ours():
    table = metrics_table(
        {"unet": {"dice": 0.5, "iou": 0.25, "mean_iou_2class": 0.6}, "vgg16": {"accuracy": 0.7}}
    )
    assert "<td>unet</td><td>dice</td><td>0.5000</td><td>0.9500</td>" in table
    # the seed's 0.9528 is a two-class mean IoU: beside ours, not beside the opacity-only IoU
    assert (
        "<td>unet</td><td>mean IoU (2 classes, as Keras MeanIoU)</td><td>0.6000</td><td>0.9528</td>" in table
    )
    assert "<td>unet</td><td>IoU (opacity only)</td><td>0.2500</td><td></td>" in table
    assert "<td>vgg16</td><td>accuracy (at the threshold)</td><td>0.7000</td><td>0.8390</td>" in table


def test_metrics_table_has_threshold_baseline_and_both_rsna_rows():
    table = metrics_table(
        {
            "unet": {"rsna_score_raw": 0.11, "rsna_score": 0.22},
            "vgg16": {"threshold": 0.35, "accuracy": 0.7, "accuracy_at_0.5": 0.6},
            "baseline": {"threshold": 0.45, "accuracy": 0.65, "roc_auc": 0.7},
        }
    )
    assert "<td>unet</td><td>RSNA score, raw boxes (evaluate.threshold)</td><td>0.1100</td>" in table
    assert "<td>unet</td><td>RSNA score, post-processed (tuned on val)</td><td>0.2200</td>" in table
    assert "<td>vgg16</td><td>threshold (Youden&#x27;s J on val)</td><td>0.3500</td>" in table
    assert "<td>vgg16</td><td>accuracy at 0.5</td><td>0.6000</td>" in table
    assert "<td>baseline</td><td>threshold (Youden&#x27;s J on val)</td><td>0.4500</td><td></td>" in table
    assert "<td>baseline</td><td>roc_auc</td><td>0.7000</td><td></td>" in table


@pytest.mark.parametrize(
    "vgg16, flagged",
    [
        ({"accuracy": 0.60, "roc_auc": 0.80}, "accuracy 0.600 vs baseline 0.650"),
        ({"accuracy": 0.70, "roc_auc": 0.69}, "roc_auc 0.690 vs baseline 0.700"),
        ({"accuracy": 0.60, "roc_auc": 0.60}, "accuracy 0.600 vs baseline 0.650, roc_auc 0.600"),
        ({"accuracy": 0.65, "roc_auc": 0.70}, None),  # equal is not worse
        ({"accuracy": 0.90, "roc_auc": 0.95}, None),
    ],
)
def test_classifier_below_the_baseline_is_flagged(vgg16, flagged):
    results = {
        "unet": {"dice": 0.1},
        "vgg16": vgg16,
        "baseline": {"accuracy": 0.65, "roc_auc": 0.70},
    }
    flags = baseline_flags(results)
    if flagged is None:
        assert flags == {}
    else:
        assert list(flags) == ["vgg16"] and flagged in flags["vgg16"]
        assert flags["vgg16"].startswith("does not beat the pixel baseline")


def test_no_baseline_no_flags():
    assert baseline_flags({"vgg16": {"accuracy": 0.1, "roc_auc": 0.1}}) == {}


def _model_files(folder, name, result):
    (folder / name).mkdir()
    (folder / name / "metrics.json").write_text(json.dumps(result))
    pd.DataFrame({"fpr": [0, 0.5, 1], "tpr": [0, 0.7, 1]}).to_csv(folder / name / "roc.csv", index=False)
    (folder / name / "run_id.txt").write_text("")
    return {
        "metrics": folder / name / "metrics.json",
        "roc": folder / name / "roc.csv",
        "run_id": folder / name / "run_id.txt",
        "figures": [],
    }


def test_report_page_flags_the_weak_classifier_and_shows_config_without_anchors(tmp_path):
    classifier = {"threshold": 0.4, "accuracy_at_0.5": 0.5, "roc_auc": 0.6}
    models = {
        "unet": _model_files(tmp_path, "unet", {"mean_iou_2class": 0.7, "rsna_score_raw": 0.1,
                                                "rsna_score": 0.2, "image_roc_auc": 0.6}),
        "vgg16": _model_files(tmp_path, "vgg16", {**classifier, "accuracy": 0.55, "head": "probe <x>"}),
        "resnet101": _model_files(tmp_path, "resnet101", {**classifier, "accuracy": 0.8, "roc_auc": 0.9}),
        "baseline": _model_files(tmp_path, "baseline", {**classifier, "accuracy": 0.7, "roc_auc": 0.75}),
    }  # fmt: skip
    (tmp_path / "rejected.tsv").write_text("stage\tsource\tpatientId\treason\n")
    shared = {"hflip": True, "rotate_degrees": 5}  # one object twice, as Snakemake's merged config has
    config = {"models": {"vgg16": {"augment": shared}, "resnet101": {"augment": shared}}}
    build_report(
        models, manifest=str(_manifest(tmp_path)), rejected=str(tmp_path / "rejected.tsv"),
        config=config, commit="abc", out_html=str(tmp_path / "report.html"),
    )  # fmt: skip
    page = (tmp_path / "report.html").read_text()
    assert "<li>vgg16 does not beat the pixel baseline: accuracy 0.550 vs baseline 0.700, roc_auc" in page
    assert "resnet101 does not beat" not in page and "baseline does not beat" not in page
    assert "<td>baseline</td><td>accuracy (at the threshold)</td><td>0.7000</td>" in page
    assert (
        "<td>unet</td><td>mean IoU (2 classes, as Keras MeanIoU)</td><td>0.7000</td><td>0.9528</td>" in page
    )
    assert "<li>vgg16: probe &lt;x&gt;</li>" in page
    assert "&amp;id" not in page and "*id0" not in page
    assert page.count("rotate_degrees: 5") == 2


def test_report_page_without_a_weak_classifier_has_no_flag(tmp_path):
    result = {"threshold": 0.5, "accuracy": 0.9, "roc_auc": 0.9}
    models = {
        "vgg16": _model_files(tmp_path, "vgg16", result),
        "baseline": _model_files(tmp_path, "baseline", {**result, "accuracy": 0.6, "roc_auc": 0.6}),
    }
    (tmp_path / "rejected.tsv").write_text("stage\tsource\tpatientId\treason\n")
    build_report(
        models, manifest=str(_manifest(tmp_path)), rejected=str(tmp_path / "rejected.tsv"),
        config={}, commit="abc", out_html=str(tmp_path / "report.html"),
    )  # fmt: skip
    page = (tmp_path / "report.html").read_text()
    assert "Flagged" not in page and "does not beat" not in page


@pytest.mark.parametrize("url", [None, "http://mlflow.example.org:5000"])
def test_run_ids_link_to_the_mlflow_ui_when_a_server_is_configured(tmp_path, url):
    result = {"threshold": 0.5, "accuracy": 0.9, "roc_auc": 0.9}
    models = {"vgg16": _model_files(tmp_path, "vgg16", result)}
    (tmp_path / "vgg16" / "run_id.txt").write_text("abc123")
    (tmp_path / "rejected.tsv").write_text("stage\tsource\tpatientId\treason\n")
    build_report(
        models, manifest=str(_manifest(tmp_path)), rejected=str(tmp_path / "rejected.tsv"),
        config={}, commit="abc", out_html=str(tmp_path / "report.html"), mlflow_url=url,
    )  # fmt: skip
    page = (tmp_path / "report.html").read_text()
    if url is None:
        assert "<td>vgg16</td><td>abc123</td>" in page and "<a href" not in page
    else:
        assert f'<td>vgg16</td><td><a href="{url}/#/runs/abc123">abc123</a></td>' in page
