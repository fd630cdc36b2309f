"""A full-size rehearsal: the whole DAG on N generated RSNA-format images, then two reruns.

    .venv/bin/python benchmarks/bench_full.py [--n 26684] [--image-size 1024] [--train-size 64]
                                              [--preprocessing-only] [--cold]

1. Generates N training DICOMs of image-size px in the RSNA layout and encoding (JPEG
   Baseline, the generator's real encoding; made once under $PNEUMOFLOW_BENCH_DIR and reused).
2. Runs the whole pipeline on them (`data.source: rsna`, `preprocess.shards: auto`) with a
   light training config: 1 epoch, every model at train-size px.
3. Prints per stage (rule): jobs, summed job seconds, elapsed span, CPU seconds, peak RSS of
   any one job and disk written, from Snakemake's `benchmark:` files.
4. A no-op rerun; then one image is added (one more DICOM and its label rows) and the
   preprocessing reruns (every arrays file and the QC table), then a no-op rerun of it and a dry
   run of everything (the training it would redo); `--rerun-all` also reruns everything.
   Seconds and the jobs each one ran.

`--cold` drops the page cache first (root only), so the run reads its inputs from disk as a
first run after a download does; without it the figures depend on what the cache holds.
The run folder is made anew each time; the input folder links to the generated files (hard links where
it can), so the added image never changes the reused sample.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml
from common import WORK, jobs_printed, preprocessing_targets, report, sample

from pneumoflow.core.ids import auto_shard_count
from pneumoflow.sources.synthetic import CLASSES_CSV, LABELS_CSV, TEST_DIR, TRAIN_DIR, generate

REPO = Path(__file__).resolve().parents[1]


def light_config(path: Path, rsna_dir: Path, size: int) -> Path:
    models = {m: {"img_size": size, "epochs": 1} for m in ("unet", "vgg16", "resnet101")}
    models["baseline"] = {"img_size": size}
    config = {
        "data": {"source": "rsna", "rsna_dir": str(rsna_dir)},
        "preprocess": {"shards": "auto"},
        "models": models,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def drop_page_cache() -> None:
    """Write dirty pages out and empty the kernel's page cache (Linux, root: checked in main)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1\n")


def linked_inputs(source: Path, folder: Path) -> Path:
    """An RSNA folder of links to `source`'s DICOMs (train and test) and copies of its CSVs.

    Hard links where `source` is on the same filesystem: the DICOMs then open as a download's
    regular files do. Through a symlink every open also reads the link: converting one shard
    of 3,314 files, cold, took 0.6-0.9 CPU-s more through symlinks (README.md, Performance)."""
    shutil.rmtree(folder, ignore_errors=True)
    for images in (TRAIN_DIR, TEST_DIR):
        (folder / images).mkdir(parents=True)
        for dicom in (source / images).iterdir():
            try:
                (folder / images / dicom.name).hardlink_to(dicom)
            except OSError:  # another filesystem
                (folder / images / dicom.name).symlink_to(dicom)
    for name in (LABELS_CSV, CLASSES_CSV):
        shutil.copyfile(source / name, folder / name)
    return folder


def add_one_image(folder: Path, size: int) -> str:
    """Generate one more image into `folder` (DICOM and CSV rows); return its patientId."""
    extra = WORK / "extra-image"
    shutil.rmtree(extra, ignore_errors=True)
    case = generate(extra, n=3, seed=999, size=size, n_test=0)[0]
    name = f"{case.patient_id}.dcm"
    (folder / TRAIN_DIR / name).unlink(missing_ok=True)  # never write through a link into the sample
    shutil.copyfile(extra / TRAIN_DIR / name, folder / TRAIN_DIR / name)
    for name in (LABELS_CSV, CLASSES_CSV):
        rows = pd.read_csv(extra / name)
        rows[rows.patientId == case.patient_id].to_csv(folder / name, mode="a", header=False, index=False)
    return case.patient_id


def snakemake(
    workdir: Path, config: Path, cores: int, targets: Sequence[str] = (), *extra: str
) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    started = time.perf_counter()
    result = subprocess.run(
        [*cmd, *extra, *targets, "--configfile", str(config), "--cores", str(cores)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return seconds, result.stdout + result.stderr


def benchmark_rows(workdir: Path) -> dict[str, list[tuple[pd.Series, float]]]:
    """{rule: [(its job's last benchmark row, the file's mtime = the job's end), ...]} from
    logs/benchmarks/**.tsv."""
    per_rule: dict[str, list[tuple[pd.Series, float]]] = {}
    bench = workdir / "logs/benchmarks"
    for tsv in sorted(bench.rglob("*.tsv")):
        rule = tsv.relative_to(bench).parts[0].removesuffix(".tsv")
        per_rule.setdefault(rule, []).append((pd.read_csv(tsv, sep="\t").iloc[-1], tsv.stat().st_mtime))
    return per_rule


def jobs_span(per_rule: dict[str, list[tuple[pd.Series, float]]]) -> float:
    """Seconds from the first job's start to the last job's end (Snakemake's start-up and its
    MLflow setup before the first job left out)."""
    jobs = [job for rule_jobs in per_rule.values() for job in rule_jobs]
    return max(end for _, end in jobs) - min(end - row["s"] for row, end in jobs)


def stage_table(per_rule: dict[str, list[tuple[pd.Series, float]]]) -> list[dict]:
    """One row per rule (see benchmark_rows), in the order the rules started."""
    rows = []
    for rule, jobs in per_rule.items():
        starts = [end - row["s"] for row, end in jobs]
        rows.append(
            {
                "stage": rule,
                "jobs": len(jobs),
                "job s (sum)": sum(row["s"] for row, _ in jobs),
                "span s": max(end for _, end in jobs) - min(starts),
                "CPU s": sum(float(row["cpu_time"]) for row, _ in jobs),
                "peak RSS MB": max(float(row["max_rss"]) for row, _ in jobs),
                "written MB": sum(float(row["io_out"]) for row, _ in jobs),
                "_start": min(starts),
            }
        )
    rows.sort(key=lambda r: r.pop("_start"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=26_684, help="training images (RSNA: 26,684)")
    parser.add_argument("--image-size", type=int, default=1024, help="DICOM rows = cols (RSNA: 1024)")
    parser.add_argument("--train-size", type=int, default=64, help="img_size of every model")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--rerun-all", action="store_true", help="also rerun the whole DAG after the added image"
    )
    parser.add_argument(
        "--preprocessing-only",
        action="store_true",
        help="run only the preprocessing (every arrays file and the QC table as targets), no reruns",
    )
    parser.add_argument("--cold", action="store_true", help="drop the page cache before the run (root)")
    args = parser.parse_args()
    if args.cold and not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        raise SystemExit("--cold needs root (to write /proc/sys/vm/drop_caches); run without it")

    started = time.perf_counter()
    source = sample(args.n, size=args.image_size)
    generated = time.perf_counter() - started
    run = WORK / f"full-{args.n}-{args.image_size}"
    shutil.rmtree(run, ignore_errors=True)
    inputs = linked_inputs(source, run / "rsna")
    config = light_config(run / "config.yaml", inputs, args.train_size)
    workdir = run / "work"

    targets = (
        preprocessing_targets([args.train_size], auto_shard_count(args.n)) if args.preprocessing_only else ()
    )
    if args.cold:
        drop_page_cache()
    seconds, _ = snakemake(workdir, config, args.cores, targets)
    jobs = benchmark_rows(workdir)
    report(
        "full_preprocessing" if args.preprocessing_only else "full_stages",
        stage_table(jobs),
        {
            "run": f"{args.n} images of {args.image_size} px, models at {args.train_size} px, 1 epoch, "
            f"{args.cores} cores, page cache {'dropped' if args.cold else 'as found'}",
            "whole run (s)": round(seconds, 1),
            "first job's start to last job's end (s)": round(jobs_span(jobs), 1),
            "generating the sample (s, 0 when reused)": round(generated, 1),
        },
    )
    if args.preprocessing_only:
        return
    noop_s, noop_out = snakemake(workdir, config, args.cores)
    pid = add_one_image(inputs, args.image_size)
    # the preprocessing alone (every arrays file and the QC table); training reruns anyway
    preprocessing = ["results/qc/rejected.tsv"]
    preprocessing += sorted(str(p.relative_to(workdir)) for p in (workdir / "results/arrays").rglob("*.npz"))
    added_s, added_out = snakemake(workdir, config, args.cores, preprocessing)
    noop_pre_s, noop_pre_out = snakemake(workdir, config, args.cores, preprocessing)
    dry_s, dry_out = snakemake(workdir, config, args.cores, [], "-n")
    rows = [
        {"rerun": "nothing changed", "seconds": noop_s, "jobs": str(jobs_printed(noop_out) or "none")},
        {"rerun": f"one image added ({pid}): preprocessing", "seconds": added_s,
         "jobs": str(jobs_printed(added_out))},
        {"rerun": "then nothing changed: preprocessing", "seconds": noop_pre_s,
         "jobs": str(jobs_printed(noop_pre_out) or "none")},
        {"rerun": "then a dry run of everything", "seconds": dry_s,
         "jobs": f"would run {jobs_printed(dry_out)}"},
    ]  # fmt: skip
    if args.rerun_all:
        all_s, all_out = snakemake(workdir, config, args.cores)
        rows.append({"rerun": "then everything", "seconds": all_s, "jobs": str(jobs_printed(all_out))})
    report("full_reruns", rows)


if __name__ == "__main__":
    main()
