"""Refused inputs: one record per refused file or CSV row, with the reason."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from pneumoflow.core.tables import read_tsv, write_tsv

COLUMNS = ["stage", "source", "patientId", "reason"]


@dataclass(frozen=True)
class Rejection:
    """A refused input. `source` is a file path or `file:line` for a CSV row."""

    stage: str
    source: str
    patientId: str  # noqa: N815 - the RSNA column name
    reason: str


def to_frame(rejections: list[Rejection]) -> pd.DataFrame:
    """Rejections as a table with COLUMNS, in the order given."""
    return pd.DataFrame([asdict(r) for r in rejections], columns=COLUMNS)


def read_rejections(path: str | Path) -> pd.DataFrame:
    """Read a rejection TSV, every column as text."""
    return read_tsv(path, dtype=str)


def combine(paths: list[str | Path], out: str | Path) -> pd.DataFrame:
    """Concatenate rejection TSVs from every stage into one file `out`."""
    frames = [read_rejections(p) for p in paths]
    table = pd.concat(frames, ignore_index=True) if frames else to_frame([])
    write_tsv(table, out)
    return table


class QCError(RuntimeError):
    """Too many inputs were refused for the run to be trusted."""


def check_rejected_fraction(n_refused: int, n_candidates: int, max_fraction: float, where: str) -> None:
    """Raise QCError when more than `max_fraction` of the candidate images were refused."""
    fraction = n_refused / max(n_candidates, 1)
    if fraction > max_fraction:
        raise QCError(
            f"{n_refused} of {n_candidates} images ({fraction:.1%}) were refused, above "
            f"qc.max_rejected_fraction={max_fraction:.1%}. Read {where} for each file or row "
            "and its reason; fix the inputs or raise qc.max_rejected_fraction in config."
        )
