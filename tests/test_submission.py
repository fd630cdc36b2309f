"""`pneumoflow score` on a small hand-worked submission."""

import pytest
from conftest import score_cli

from pneumoflow.submission import score_submission

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
