"""TSV tables written atomically and read back as text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pneumoflow.atomic import atomic_path


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
