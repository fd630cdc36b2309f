"""The report's data section escapes every string that comes from the data."""

import pandas as pd

from pneumoflow.report import dataset_summary, metrics_table


def test_data_strings_are_escaped(tmp_path):
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
    ).to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
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
    table = metrics_table({"unet": {"dice": 0.5, "iou": 0.25}, "vgg16": {"accuracy": 0.7}})
    assert "<td>unet</td><td>dice</td><td>0.5000</td><td>0.9500</td>" in table
    assert "<td>unet</td><td>iou</td><td>0.2500</td><td>0.9528</td>" in table
    assert "<td>vgg16</td><td>accuracy</td><td>0.7000</td><td>0.8390</td>" in table
