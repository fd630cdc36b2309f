"""Read and check the RSNA label CSVs: one row per box, plus the 3-way class.

Box coordinates are pixels in the image's own frame (RSNA's images are all
1024x1024, so its boxes are in that frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pneumoflow.core.ids import is_plain_id
from pneumoflow.core.qc import Rejection

LABEL_COLUMNS = ["patientId", "x", "y", "width", "height", "Target"]
CLASS_COLUMNS = ["patientId", "class"]
CLASS_NAMES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
DUPLICATE_ROW = "duplicate row ignored"


class CsvFormatError(ValueError):
    """A CSV that cannot be used at all (missing column, not a CSV)."""


@dataclass
class Labels:
    """Per-patient labels in first-appearance order; `boxes[id]` is a list of (x, y, w, h)."""

    order: list[str] = field(default_factory=list)
    target: dict[str, int] = field(default_factory=dict)
    klass: dict[str, str] = field(default_factory=dict)
    boxes: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)


def read_csv(path: str | Path, required: list[str]) -> pd.DataFrame:
    """Read a CSV as text (BOM and CRLF tolerated); fail at once naming a missing column."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise CsvFormatError(f"{path}: not a readable CSV ({exc})") from exc
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise CsvFormatError(f"{path}: missing column(s) {missing}; expected header {','.join(required)}")
    return frame[required].apply(lambda col: col.str.strip())


def _number(text: str) -> float:
    try:
        return float(text) if text != "" else math.nan
    except ValueError:
        return math.nan


def _row_problem(pid: str, target: str, box_text: tuple[str, str, str, str]) -> str | None:
    if not is_plain_id(pid):
        return f"patientId {pid!r} is not a plain identifier (path separators or '..')"
    if target not in ("0", "1"):
        return f"Target must be 0 or 1, got {target!r}"
    box = [_number(v) for v in box_text]
    if target == "0":
        return None if all(math.isnan(v) for v in box) else "Target=0 row carries a box"
    if any(math.isnan(v) for v in box):
        return "Target=1 row has a missing or non-numeric box"
    if box[0] < 0 or box[1] < 0 or box[2] <= 0 or box[3] <= 0:
        return f"Target=1 row has a negative or empty box {box}"
    return None


def read_labels(labels_csv: str | Path, classes_csv: str | Path) -> tuple[Labels, list[Rejection]]:
    """Parse both CSVs into Labels, refusing bad rows and every image they touch.

    Exact duplicate label rows are noted and ignored; duplicate class rows are
    expected (RSNA's class CSV repeats a patient's class once per box). A
    patient with any bad row is refused whole: a partial set of boxes would
    teach the model a wrong mask.
    """
    labels = read_csv(labels_csv, LABEL_COLUMNS)
    classes = read_csv(classes_csv, CLASS_COLUMNS)
    rejections: list[Rejection] = []
    bad: set[str] = set()

    def refuse(path, line, pid, reason):
        rejections.append(Rejection("manifest", f"{path}:{line}", pid, reason))
        bad.add(pid)

    result = Labels()
    duplicated = labels.duplicated().tolist()
    # plain tuples, not iterrows: a pandas Series per row took 18 s for 38,708 rows (26,684 images)
    columns = labels[["patientId", "x", "y", "width", "height", "Target"]]
    for index, (pid, x, y, w, h, target_text) in enumerate(columns.itertuples(index=False, name=None)):
        box_text = (x, y, w, h)
        line = index + 2  # the CSV's line: after the header, counted from 1
        if duplicated[index]:
            # kept as a note only: the first copy of the row is used
            rejections.append(Rejection("manifest", f"{labels_csv}:{line}", pid, DUPLICATE_ROW))
            continue
        problem = _row_problem(pid, target_text, box_text)
        if problem:
            refuse(labels_csv, line, pid, problem)
            continue
        target = int(target_text)
        if pid not in result.target:
            result.order.append(pid)
            result.target[pid], result.boxes[pid] = target, []
        elif result.target[pid] != target:
            refuse(labels_csv, line, pid, "rows of this patient disagree on Target")
        if target == 1:
            result.boxes[pid].append((float(x), float(y), float(w), float(h)))

    unique = classes.drop_duplicates()
    for index, pid, klass in zip(unique.index, unique.patientId, unique["class"], strict=True):
        if klass not in CLASS_NAMES:
            refuse(classes_csv, index + 2, pid, f"unknown class {klass!r}; expected one of {CLASS_NAMES}")
        elif pid in result.klass and result.klass[pid] != klass:
            refuse(classes_csv, index + 2, pid, "rows of this patient disagree on class")
        else:
            result.klass[pid] = klass
    for pid in result.order:
        klass = result.klass.get(pid)
        if klass is None:
            refuse(classes_csv, "-", pid, "patient has no row in the class CSV")
        elif (klass == "Lung Opacity") != (result.target[pid] == 1):
            refuse(classes_csv, "-", pid, f"class {klass!r} contradicts Target={result.target[pid]}")
    result.order = [pid for pid in result.order if pid not in bad]
    return result, rejections
