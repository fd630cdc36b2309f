"""Label CSV parsing: each bad row is refused with its reason, the rest kept."""

import pytest

from pneumoflow.formats.labels import CsvFormatError, read_labels

HEADER = "patientId,x,y,width,height,Target\n"


def _write(tmp_path, labels: str, classes: str):
    (tmp_path / "labels.csv").write_bytes(labels.encode() if isinstance(labels, str) else labels)
    (tmp_path / "classes.csv").write_text(classes)
    return read_labels(tmp_path / "labels.csv", tmp_path / "classes.csv")


CLASSES = "patientId,class\na,Lung Opacity\nb,Normal\nc,Lung Opacity\n"


def test_good_rows(tmp_path):
    labels, rejections = _write(
        tmp_path,
        HEADER + "a,10,20,30,40,1\na,50,60,5,5,1\nb,,,,,0\n",
        CLASSES.replace("c,Lung Opacity\n", ""),
    )
    assert rejections == []
    assert labels.order == ["a", "b"]
    assert labels.boxes["a"] == [(10, 20, 30, 40), (50, 60, 5, 5)]
    assert labels.target == {"a": 1, "b": 0}
    assert labels.klass["b"] == "Normal"


@pytest.mark.parametrize(
    "row, reason",
    [
        ("c,-5,20,30,40,1", "negative or empty box"),
        ("c,5,20,0,40,1", "negative or empty box"),
        ("c,,20,30,40,1", "missing or non-numeric box"),
        ("c,nan,20,30,40,1", "missing or non-numeric box"),
        ("c,x,20,30,40,1", "missing or non-numeric box"),
        ("c,1,2,3,4,2", "Target must be 0 or 1"),
        ("../d,1,2,3,4,1", "not a plain identifier"),
        ("d/e,1,2,3,4,1", "not a plain identifier"),
    ],
)
def test_bad_row_refuses_the_patient(tmp_path, row, reason):
    labels, rejections = _write(
        tmp_path, HEADER + "a,10,20,30,40,1\nb,,,,,0\nc,1,1,5,5,1\n" + row + "\n", CLASSES
    )
    assert [r.reason for r in rejections if reason in r.reason], rejections
    bad = [r for r in rejections if reason in r.reason][0]
    assert bad.source.endswith("labels.csv:5")  # header is line 1
    bad_id = row.split(",")[0]
    assert bad_id not in labels.order and labels.order[:2] == ["a", "b"]
    assert bad.patientId == bad_id


def test_patient_without_class_row_is_refused(tmp_path):
    labels, rejections = _write(tmp_path, HEADER + "a,1,2,3,4,1\nz,,,,,0\n", CLASSES)
    assert labels.order == ["a"]
    assert rejections[0].patientId == "z" and "no row in the class CSV" in rejections[0].reason


def test_class_contradicting_target_is_refused(tmp_path):
    labels, rejections = _write(tmp_path, HEADER + "b,1,2,3,4,1\n", CLASSES)
    assert labels.order == [] and "contradicts Target=1" in rejections[0].reason


def test_duplicate_rows_are_noted_once(tmp_path):
    labels, rejections = _write(tmp_path, HEADER + "a,1,2,3,4,1\na,1,2,3,4,1\n", CLASSES)
    assert labels.boxes["a"] == [(1, 2, 3, 4)]
    assert [r.reason for r in rejections] == ["duplicate row ignored"]


def test_bom_crlf_and_extra_columns_are_accepted(tmp_path):
    text = "\ufeffpatientId,x,y,width,height,Target,extra\r\na,1,2,3,4,1,zz\r\n"
    labels, rejections = _write(tmp_path, text.encode("utf-8"), CLASSES)
    assert rejections == [] and labels.boxes["a"] == [(1, 2, 3, 4)]


def test_missing_column_fails_naming_it(tmp_path):
    with pytest.raises(CsvFormatError, match=r"missing column\(s\) \['Target'\]"):
        _write(tmp_path, "patientId,x,y,width,height\na,1,2,3,4\n", CLASSES)
