"""DAG overhead and peak memory at full RSNA scale (26,684 images).

    .venv/bin/python benchmarks/bench_dag.py [--n 26684] [--image-size 64]

1. `snakemake -n` on an RSNA layout of N placeholder files (empty .dcm: a dry run never
   opens them), for N and N/10: seconds and job counts.
2. A real preprocessing run (every array file and the QC table as targets) on N generated
   DICOMs of image-size px in 8 shards, arrays at the production sizes (U-Net 256,
   classifiers 224), then a no-op rerun, then one image added to the labels and the image
   folder: the jobs a dry run schedules for it, and the seconds to run them. Peak RSS of
   every job comes from Snakemake's own `benchmark:` files.
3. Peak RSS of loading the training split as each trainer does (classifier: images + labels;
   U-Net: images + masks) at that scale.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pydicom
import yaml
from common import WORK, jobs_printed, preprocessing_targets, report

from pneumoflow.sources.synthetic import Case, generate, write_dicom

REPO = Path(__file__).resolve().parents[1]
SIZES = {"unet": 256, "vgg16": 224, "resnet101": 224}
SHARDS = 8


def write_config(path: Path, rsna_dir: Path) -> Path:
    models = {m: {"img_size": s} for m, s in SIZES.items()}
    data = {"source": "rsna", "rsna_dir": str(rsna_dir)}
    path.write_text(yaml.safe_dump({"data": data, "models": models, "preprocess": {"shards": SHARDS}}))
    return path


def add_image(data: Path) -> str:
    """Add one Normal patient (a copy of the first image's pixels) to an RSNA folder."""
    images = data / "stage_2_train_images"
    count = len(list(images.glob("added-patient-*.dcm")))
    pid = f"added-patient-{count + 1:04d}"
    first = next(images.glob("*.dcm"))
    write_dicom(images / f"{pid}.dcm", pydicom.dcmread(first).pixel_array, Case(pid, "Normal"))
    for name, row in (
        ("stage_2_train_labels.csv", {"patientId": pid, "Target": 0}),
        ("stage_2_detailed_class_info.csv", {"patientId": pid, "class": "Normal"}),
    ):
        table = pd.read_csv(data / name)
        pd.concat([table, pd.DataFrame([row])], ignore_index=True).to_csv(data / name, index=False)
    return pid


def snakemake(workdir: Path, config: Path, *args: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    started = time.perf_counter()
    result = subprocess.run(
        [*cmd, "--configfile", str(config), "--cores", "2", *args], cwd=REPO, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return seconds, result.stdout + result.stderr


def job_total(output: str) -> int:
    return int(re.search(r"^total\s+(\d+)", output, re.M).group(1))


def placeholders(n: int) -> Path:
    """RSNA layout with n empty .dcm files and n label rows (for dry runs only)."""
    folder = WORK / f"placeholders-{n}"
    images = folder / "stage_2_train_images"
    if not images.is_dir():
        images.mkdir(parents=True)
        ids = [f"{i:08x}-0000-0000-0000-000000000000" for i in range(n)]
        for pid in ids:
            (images / f"{pid}.dcm").touch()
        pd.DataFrame({"patientId": ids, "x": "", "y": "", "width": "", "height": "", "Target": 0}).to_csv(
            folder / "stage_2_train_labels.csv", index=False
        )
        pd.DataFrame({"patientId": ids, "class": "Normal"}).to_csv(
            folder / "stage_2_detailed_class_info.csv", index=False
        )
    return folder


def dry_runs(n: int) -> list[dict]:
    rows = []
    for count in (n // 10, n):
        data = placeholders(count)
        workdir = WORK / f"dry-{count}"
        workdir.mkdir(exist_ok=True)
        seconds, out = snakemake(workdir, write_config(workdir / "c.yaml", data), "-n")
        rows.append({"what": f"snakemake -n, {count} images", "seconds": seconds, "jobs": job_total(out)})
    return rows


def max_rss(workdir: Path) -> list[dict]:
    """Peak RSS (MB) of the largest job of each rule, from the jobs' Snakemake benchmark files."""
    rows = []
    for tsv in (workdir / "logs" / "benchmarks").rglob("*.tsv"):
        rule = tsv.relative_to(workdir / "logs" / "benchmarks").parts[0].removesuffix(".tsv")
        rows.append({"rule": rule, "max_rss": float(pd.read_csv(tsv, sep="\t").max_rss.max())})
    table = pd.DataFrame(rows).groupby("rule").max_rss.agg(["max", "count"])
    return [
        {"what": f"{rule} (largest of {int(r['count'])} jobs)", "peak_rss_mb": r["max"]}
        for rule, r in table.iterrows()
    ]


# (imports, one pass over the training split) as each trainer reads it
LOADERS = {
    # the classifiers read their split's images from the shards as batches ask: one shuffled pass
    "classifier": (
        "from torch.utils.data import DataLoader\n"
        "from pneumoflow.models.torchdata import ArrayDataset\n"
        "from pneumoflow.training.classifier import load_split\n",
        "images, labels = load_split(paths, 'train')\n"
        "n = sum(len(y) for _, y in DataLoader(ArrayDataset(images, labels), batch_size=16, shuffle=True))\n",
    ),
    # the U-Net streams its shards through tf.data
    "unet": (
        "from pneumoflow.training.unet import UnetConfig, make_dataset\n",
        "cfg = UnetConfig(img_size=SIZE)\n"
        "n = sum(len(x) for x, _ in make_dataset([str(p) for p in paths], cfg, training=True))\n",
    ),
}
# VmHWM: ru_maxrss would carry over the parent's peak across fork + exec
PEAK = "int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) / 1024"


def split_loading_rss(workdir: Path) -> list[dict]:
    """Peak RSS of reading the training split as each trainer does, in a fresh process, and
    the part of it that importing the trainer's libraries takes."""
    rows = []
    for trainer, size in (("classifier", 224), ("unet", 256)):
        imports, load = LOADERS[trainer]
        code = (
            f"import re\nfrom pathlib import Path\nSIZE = {size}\n"
            f"paths = sorted(Path('{workdir}/results/arrays/{size}px/train').glob('*.npz'))\n"
            f"{imports}imported = {PEAK}\n{load}print(n, imported, {PEAK})"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        n, imported, peak = out.stdout.split()[-3:]
        rows.append(
            {
                "what": f"read train split for {trainer} ({n} images, {size} px)",
                "peak_rss_mb": float(peak),
                "after_imports_mb": float(imported),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=26684, help="images (the RSNA training set has 26,684)")
    parser.add_argument("--image-size", type=int, default=64, help="side of the generated DICOMs")
    parser.add_argument("--memory-only", action="store_true", help="only the memory table, on the last run")
    args = parser.parse_args()
    if args.memory_only:
        workdir = WORK / f"run-{args.n}"
        report("memory", max_rss(workdir) + split_loading_rss(workdir))
        return
    rows = dry_runs(args.n)

    data = WORK / f"real-{args.n}-{args.image_size}"
    if not (data / "done").exists():
        started = time.perf_counter()
        generate(data, n=args.n, seed=5, size=args.image_size, n_test=3)
        (data / "done").touch()
        print(f"generated {args.n} DICOMs in {time.perf_counter() - started:.0f}s")
    workdir = WORK / f"run-{args.n}"
    workdir.mkdir(exist_ok=True)
    config = write_config(workdir / "c.yaml", data)
    targets = preprocessing_targets(SIZES.values(), SHARDS)
    seconds, _ = snakemake(workdir, config, *targets)
    rows.append(
        {"what": f"preprocessing, {args.n} images of {args.image_size} px", "seconds": seconds, "jobs": ""}
    )
    seconds, out = snakemake(workdir, config, *targets)
    assert "Nothing to be done" in out or job_total(out) == 0, out[-2000:]
    rows.append({"what": "no-op rerun (nothing to do)", "seconds": seconds, "jobs": 0})
    seconds, out = snakemake(workdir, config, "-n")
    rows.append({"what": "snakemake -n after preprocessing", "seconds": seconds, "jobs": job_total(out)})
    add_image(data)  # a new one each time the benchmark runs
    seconds, out = snakemake(workdir, config, "-n", *targets)
    rows.append({"what": "one image added: snakemake -n", "seconds": seconds, "jobs": jobs_printed(out)})
    seconds, out = snakemake(workdir, config, *targets)
    rows.append({"what": "one image added: the run", "seconds": seconds, "jobs": jobs_printed(out)})
    report(
        "dag",
        rows,
        {"images": f"{args.n} (placeholders for -n; generated {args.image_size} px DICOMs for the run)"},
    )
    report("memory", max_rss(workdir) + split_loading_rss(workdir))


if __name__ == "__main__":
    main()
