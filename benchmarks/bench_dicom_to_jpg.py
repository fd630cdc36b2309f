"""dicom_to_jpg: ours vs the straightforward loop vs the I/O limit, on full-size RSNA-format DICOMs.

    .venv/bin/python benchmarks/bench_dicom_to_jpg.py [--n 200]

Straightforward loop: pydicom pixel_array -> cv2.imwrite, one process. I/O limit: read each
file, write its bytes. Ours: the dicom_to_jpg stage (convert_shard) on the same files, also with its fast path
(dicomscan) switched off, then on two shards in one and two processes for the scaling in cores.
Last, what a user runs: `snakemake --cores 1 results/qc/rejected.tsv` in a fresh folder (the
manifest, every dicom_to_jpg shard of `preprocess.shards: auto`, the QC table), Snakemake's
start-up, scheduling and each job's Python start included.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import pandas as pd
import pydicom
from common import WORK, report, sample, timed, timed_in_turns

from pneumoflow.formats import jpeg as convert
from pneumoflow.sources.rsna import convert_shard

REPO = Path(__file__).resolve().parents[1]


def straightforward(paths: list[Path], out: Path) -> None:
    for path in paths:
        cv2.imwrite(str(out / f"{path.stem}.jpg"), pydicom.dcmread(path).pixel_array)


def io_limit(paths: list[Path], out: Path) -> None:
    for path in paths:
        (out / f"{path.stem}.jpg").write_bytes(path.read_bytes())


def ours(manifest: Path, dicom_dir: Path, out: Path, shard: int = 0) -> None:
    convert_shard(manifest, shard, dicom_dir, out / f"{shard:02d}", out / f"rejected-{shard}.tsv")


def ours_via_pydicom(manifest: Path, dicom_dir: Path, out: Path) -> None:
    """The stage with its fast path (dicomscan) switched off: every file through pydicom."""
    fast = convert.copyable_frame
    convert.copyable_frame = lambda path: None
    try:
        ours(manifest, dicom_dir, out)
    finally:
        convert.copyable_frame = fast


def via_snakemake(rsna_dir: Path, workdir: Path) -> None:
    """The preprocessing up to the JPGs as a user runs it, one core, in a fresh folder."""
    config = workdir.parent / f"{workdir.name}.yaml"
    config.write_text(f"data: {{source: rsna, rsna_dir: '{rsna_dir}'}}\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "1", "results/qc/rejected.tsv", "--configfile", str(config)]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{result.stderr[-3000:]}")


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="DICOMs (1024 x 1024, JPEG baseline)")
    args = parser.parse_args()
    dicom_dir = sample(args.n) / "stage_2_train_images"
    paths = sorted(dicom_dir.glob("*.dcm"))
    out = WORK / "jpg-out"
    # one shard of everything, then two shards for the scaling run
    manifest = WORK / "manifest-one.tsv"
    pd.DataFrame({"patientId": [p.stem for p in paths], "shard": 0}).to_csv(manifest, sep="\t", index=False)
    manifest2 = WORK / "manifest-two.tsv"
    pd.DataFrame({"patientId": [p.stem for p in paths], "shard": [i % 2 for i in range(len(paths))]}).to_csv(
        manifest2, sep="\t", index=False
    )

    def clean_slate() -> None:
        # an empty output folder, and the last run's written pages on disk: a run does not pay
        # for the one before it (the I/O limit alone ranged 0.8-3.9 s here within half an hour)
        fresh(out)
        os.sync()
        # every DICOM in the page cache: the stage drops each file it converted
        # (core.readahead), and the next method would read them all from disk
        for path in paths:
            path.read_bytes()

    seconds = timed_in_turns(
        {
            "I/O limit (read + write bytes)": lambda: io_limit(paths, out),
            "ours, 1 process (convert_shard)": lambda: ours(manifest, dicom_dir, out),
            "ours without the fast path (pydicom parse), 1 process": lambda: ours_via_pydicom(
                manifest, dicom_dir, out
            ),
        },
        clean_slate,
    )
    clean_slate()
    seconds["straightforward loop (pixel_array -> imwrite)"] = timed(lambda: straightforward(paths, out), 1)

    # Worker processes are started (and have imported everything) before the clock starts,
    # as Snakemake's jobs are: the figure is the conversion, not Python start-up.
    with ProcessPoolExecutor(1) as one_worker, ProcessPoolExecutor(2) as two_workers:

        def two_shards(pool: ProcessPoolExecutor) -> None:
            list(pool.map(ours, [manifest2] * 2, [dicom_dir] * 2, [out] * 2, [0, 1]))

        for pool in (one_worker, two_workers):  # warm
            clean_slate()
            two_shards(pool)
        runs = {"ours, 2 shards in 1 process": lambda: two_shards(one_worker)}
        runs["ours, 2 shards in 2 processes"] = lambda: two_shards(two_workers)
        seconds.update(timed_in_turns(runs, clean_slate))
    user_run = "snakemake --cores 1 results/qc/rejected.tsv (what a user runs)"
    seconds[user_run] = timed(lambda: via_snakemake(dicom_dir.parent, fresh(WORK / "snakemake-run")), 1)
    loop = seconds["straightforward loop (pixel_array -> imwrite)"]
    io = seconds["I/O limit (read + write bytes)"]
    one = seconds["ours, 1 process (convert_shard)"]
    serial, parallel = seconds["ours, 2 shards in 1 process"], seconds["ours, 2 shards in 2 processes"]
    rows = [
        {"method": k, "seconds": v, "images/s": len(paths) / v, "vs loop": loop / v, "vs I/O limit": io / v}
        for k, v in seconds.items()
    ]
    report(
        "dicom_to_jpg",
        rows,
        {
            "images": f"{len(paths)} RSNA-format DICOMs, 1024x1024, JPEG baseline",
            "ours / loop (per core)": f"{loop / one:.1f}x",
            "snakemake run / loop": f"{loop / seconds[user_run]:.1f}x",
            "ours / I/O limit": f"{io / one:.0%}",
            "speed-up of 2 processes over 1": f"{serial / parallel:.2f}x",
        },
    )


if __name__ == "__main__":
    main()
