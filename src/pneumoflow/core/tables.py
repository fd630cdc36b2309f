"""TSV tables written atomically and read back as text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pneumoflow.core.atomic import atomic_path

# The manifest's columns (ImageFolder adds `source`) and the boxes table's.
MANIFEST_COLUMNS = [
    "patientId",
    "split",
    "shard",
    "target",
    "class",
    "n_boxes",
    "view",
    "sex",
    "age",
    "rows",
    "cols",
]
BOX_COLUMNS = ["patientId", "x", "y", "width", "height"]


def write_tsv(frame: pd.DataFrame, path: str | Path) -> None:
    """Atomically write a table as TSV (no index)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def read_tsv(path: str | Path, **kwargs) -> pd.DataFrame:
    """Read a TSV written by write_tsv; empty cells stay empty strings."""
    return pd.read_csv(path, sep="\t", keep_default_na=False, **kwargs)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read results/manifest.tsv with patientId and class as text."""
    return read_tsv(path, dtype={"patientId": str, "class": str, "view": str, "sex": str})


def truth_boxes(boxes_tsv: str | Path, patient_ids) -> dict[str, list[tuple[float, float, float, float]]]:
    """{patientId: [(x, y, w, h), ...]} from results/boxes.tsv in the original pixel frame, [] for
    patients without a box."""
    boxes = read_tsv(boxes_tsv, dtype={"patientId": str})
    grouped = {
        pid: list(g[["x", "y", "width", "height"]].itertuples(index=False, name=None))
        for pid, g in boxes.groupby("patientId")
    }
    return {pid: grouped.get(pid, []) for pid in patient_ids}
