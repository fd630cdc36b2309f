"""Rule synthetic_sample: generate the built-in sample in the RSNA layout (sources.synthetic)."""

from __future__ import annotations

from pathlib import Path

from pneumoflow.sources.synthetic import generate


def run(*, labels: str, n: int, seed: int, size: int) -> None:
    """Write `n` chest X-ray DICOMs of `size` px (from `seed`) and the CSVs beside `labels`."""
    generate(Path(labels).parent, n=n, seed=seed, size=size)
