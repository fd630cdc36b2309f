"""`pneumoflow score` on a small hand-worked submission; write_submission's post-processing."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import SquareUNet, score_cli

# PyTorch before TensorFlow: with these wheels the other order crashes the process
import pneumoflow.models.classifier_inference  # noqa: F401
from pneumoflow.models import metrics, unet_inference
from pneumoflow.stages.submission import score_submission, write_submission

LABELS = """patientId,x,y,width,height,Target
a,0,0,100,10,1
b,,,,,0
c,10,10,20,20,1
c,50,50,20,20,1
d,,,,,0
"""
# a: perfect (1); b: no truth, no prediction (left out); c: one of two found (1/2 at every
# threshold); d: a false positive on an empty image (0) -> mean of 1, 0.5, 0 = 0.5
SUBMISSION = """patientId,PredictionString
a,0.9 0 0 100 10
b,
c,0.8 10 10 20 20
d,0.3 5 5 10 10
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "labels.csv").write_text(LABELS)
    (tmp_path / "sub.csv").write_text(SUBMISSION)
    return tmp_path / "sub.csv", tmp_path / "labels.csv"


def test_score_function(files):
    assert score_submission(*files) == (pytest.approx(0.5), 4)


def test_score_cli(files):
    submission, labels = files
    out = score_cli(submission, labels)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "RSNA score 0.5000 over 4 images"


def test_unknown_patient_and_bad_string_are_named(files, tmp_path):
    submission, labels = files
    (tmp_path / "bad.csv").write_text("patientId,PredictionString\nzz,0.5 1 2 3 4\n")
    with pytest.raises(ValueError, match="not in .*labels.csv, e.g. zz"):
        score_submission(tmp_path / "bad.csv", labels)
    (tmp_path / "bad2.csv").write_text("patientId,PredictionString\na,0.5 1 2 3\n")
    with pytest.raises(ValueError, match=r"bad2.csv:2: PredictionString needs groups of 5"):
        score_submission(tmp_path / "bad2.csv", labels)
    out = score_cli(tmp_path / "bad2.csv", labels)
    assert out.returncode == 1 and "groups of 5" in out.stderr


# the baseline as JSON numbers: 2x2 pixels, probability ~0 for dark images, ~1 for bright ones
BRIGHTNESS_BASELINE = {"pixels": 2, "img_size": 32, "C": 0.1, "mean": [0.0] * 4, "scale": [1.0] * 4,
                       "coef": [5.0] * 4, "intercept": -10.0, "threshold": 0.5}  # fmt: skip


@pytest.mark.parametrize(("gate", "dark_boxes"), [(0.5, 0), (None, 1)])
def test_submission_boxes_are_post_processed_and_gated(make_dicom, tmp_path, monkeypatch, gate, dark_boxes):
    monkeypatch.setattr(unet_inference, "load_unet", lambda path: SquareUNet())
    images = tmp_path / "images"
    images.mkdir()
    for value, pid in ((20, "dark"), (235, "bright")):
        make_dicom(np.full((64, 64), value, np.uint8), pid).rename(images / f"{pid}.dcm")
    tuned = {"threshold": 0.5, "min_area": 0.0, "shrink": 0.5, "gate": gate, "gate_with": "baseline"}
    (tmp_path / "postprocess.json").write_text(json.dumps(tuned))
    (tmp_path / "baseline.json").write_text(json.dumps(BRIGHTNESS_BASELINE))
    out = tmp_path / "submission.csv"
    write_submission(
        images, "unused.keras", out, postprocess_json=tmp_path / "postprocess.json",
        gate_with="baseline", gate_model=tmp_path / "baseline.json",
    )  # fmt: skip
    table = pd.read_csv(out, keep_default_na=False).set_index("patientId")
    assert sorted(table.index) == ["bright", "dark"]
    dark = metrics.parse_prediction_string(table.PredictionString["dark"])
    assert len(dark) == dark_boxes
    ((conf, *box),) = metrics.parse_prediction_string(table.PredictionString["bright"])
    # 8 x 8 px of 32 at (8, 4) -> 16 x 16 px of 64 at (16, 8), shrunk by half about its centre
    assert box == pytest.approx([20, 12, 8, 8])
    bright = 1 / (1 + np.exp(-(4 * 5.0 * 235 / 255 - 10.0)))  # the baseline's probability
    assert conf == pytest.approx(0.9 if gate is None else 0.9 * bright, abs=1e-5)


def test_submission_of_an_empty_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(unet_inference, "load_unet", lambda path: SquareUNet())
    (tmp_path / "postprocess.json").write_text(json.dumps({"threshold": 0.5, "min_area": 0.0,
                                                           "shrink": 1.0, "gate": None}))  # fmt: skip
    with pytest.raises(ValueError, match="holds no .dcm files"):
        write_submission(tmp_path, "unused.keras", tmp_path / "s.csv",
                         postprocess_json=tmp_path / "postprocess.json")  # fmt: skip
