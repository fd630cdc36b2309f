"""Rule synthetic_sample: generate the built-in sample in the RSNA layout (sources.synthetic)."""

from __future__ import annotations

from pathlib import Path

from pneumoflow.sources.synthetic import generate


def run(*, labels: str, n: int, seed: int, size: int, threads: int = 1) -> None:
    """Write `n` chest X-ray DICOMs of `size` px (from `seed`) and the CSVs beside `labels`,
    in up to `threads` processes (the files are the same for any count)."""
    generate(Path(labels).parent, n=n, seed=seed, size=size, workers=workers_for(n, size, threads))


# A process costs about a second to start; 64 megapixels take several to write
PIXELS_PER_WORKER = 64 * 2**20


def workers_for(n: int, size: int, threads: int) -> int:
    """Processes worth starting for `n` images of `size` px: one per 64 megapixels, at most
    `threads` (the default sample, 240 x 1024 px: 3; a test's 30 x 256 px: 1)."""
    return max(1, min(threads, n * size * size // PIXELS_PER_WORKER))
