"""The staleness contract (README, Reruns): each change reruns exactly the jobs of its row.

One tiny build (RSNA layout, 30 images, 2 shards, 32 px, 1 epoch; VGG16 off: ResNet101
stands for both classifiers, which share one rule body and module) from a copy of the
workflow, so that module and env edits never touch the repository. Each row is then
checked by a dry run; the data rows by running the preprocessing for real and reading
which jobs ran. The expected job sets are written out here, from the README's table.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from pneumoflow.sources.synthetic import Case, generate, write_dicom

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = ["Snakefile", "config.yaml", "rules", "scripts", "src", "envs", "schemas", "profiles", "report"]

CONFIG = """\
data:
  source: rsna
  rsna_dir: {data}
preprocess:
  shards: 2
models:
  unet: {{img_size: 32, epochs: 1, batch_size: 8, lr: 0.001, threads: 1}}
  vgg16: {{enabled: false}}
  resnet101: {{img_size: 32, epochs: 1, batch_size: 8, lr: 0.001, threads: 1}}
  baseline: {{img_size: 32}}
"""

# The same values: keys in another order, numbers spelt otherwise, strings quoted.
RESPELT = """\
models:
  resnet101: {{lr: 1e-3, threads: 1.0, batch_size: 8.0, epochs: 1, img_size: 32}}
  vgg16: {{enabled: false}}
  unet: {{batch_size: 8, lr: 1.0e-3, img_size: 32, threads: 1, epochs: 1}}
  baseline: {{img_size: 32.0}}
preprocess: {{shards: 2}}
split: {{seed: 42, test_fraction: 1.5e-1, val_fraction: "0.15"}}
data:
  rsna_dir: '{data}'
  source: "rsna"
"""

# Settings that change no result: MLflow connection, telemetry, threads, GPUs.
NEUTRAL = """\
data: {{source: rsna, rsna_dir: {data}}}
preprocess: {{shards: 2}}
models:
  unet: {{img_size: 32, epochs: 1, batch_size: 8, lr: 0.001, threads: 2, gpus: 1}}
  vgg16: {{enabled: false}}
  resnet101: {{img_size: 32, epochs: 1, batch_size: 8, lr: 0.001, threads: 2}}
  baseline: {{img_size: 32}}
mlflow:
  tracking_uri: sqlite:///results/other.db
  experiment: elsewhere
  reuse_runs: false
  required: false
  telemetry: true
  system_metrics: false
  system_metrics_interval: 3
"""

# VGG16 is off, so the U-Net's boxes have no gate classifier (postprocess.gate_with: vgg16)
UNET_CHAIN = {"train_unet", "postprocess", "evaluate[unet]", "submission", "report", "all"}
EVALUATION = {"evaluate[unet]", "evaluate[resnet101]", "evaluate[baseline]", "report", "all"}
RESNET_CHAIN = {"train_resnet101", "evaluate[resnet101]", "report", "all"}
BASELINE_CHAIN = {"train_baseline", "evaluate[baseline]", "report", "all"}
TRAINING = UNET_CHAIN | RESNET_CHAIN | BASELINE_CHAIN
SHARDS, SPLITS = ("00", "01"), ("train", "val", "test")
PREPROCESSING = (
    {"manifest", "qc_rejected"}
    | {f"{rule}[{s}]" for rule in ("dicom_to_jpg", "masks") for s in SHARDS}
    | {f"arrays[32,{split},{s}]" for split in SPLITS for s in SHARDS}
)
EVERYTHING = PREPROCESSING | TRAINING
DICOM_TO_JPG = {f"dicom_to_jpg[{s}]" for s in SHARDS}


def snakemake(repo: Path, work: Path, config: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(work)]
    result = subprocess.run(
        [*cmd, "--configfile", str(config), "--cores", "2", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    return out


def jobs(output: str) -> set[str]:
    """Jobs a snakemake run printed, as rule[wildcard values] ('all' and 'train_unet' bare)."""
    found = set()
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) )", output):
        head = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        if not head:
            continue
        wildcards = re.search(r"^\s+wildcards: (.+)$", block, re.M)
        values = [kv.split("=", 1)[1] for kv in wildcards.group(1).split(", ")] if wildcards else []
        found.add(head.group(1) + (f"[{','.join(values)}]" if values else ""))
    return found


class Build:
    def __init__(self, root: Path):
        self.repo, self.data, self.work = root / "repo", root / "data", root / "work"
        self.root = root

    def config(self, text: str, name: str = "config.yaml") -> Path:
        path = self.root / name
        path.write_text(text.format(data=self.data))
        return path

    def dry_run(self, config: Path | None = None) -> set[str]:
        return jobs(snakemake(self.repo, self.work, config or self.config(CONFIG), "-n"))

    def run(self, *args: str) -> set[str]:
        return jobs(snakemake(self.repo, self.work, self.config(CONFIG), *args))


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Build:
    root = tmp_path_factory.mktemp("staleness")
    b = Build(root)
    b.repo.mkdir()
    for name in WORKFLOW:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, b.repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, b.repo / name)
    generate(b.data, n=30, seed=3, size=128)
    b.run()
    return b


def edited(path: Path):
    """Context: `path` with one comment line appended, restored afterwards."""

    class Edit:
        def __enter__(self):
            self.before = path.read_bytes()
            path.write_bytes(self.before + b"\n# an edit\n")

        def __exit__(self, *exc):
            path.write_bytes(self.before)

    return Edit()


def test_nothing_changed_nothing_reruns(build):
    assert build.dry_run() == set()


def test_key_order_quoting_and_number_spelling_rerun_nothing(build):
    assert build.dry_run(build.config(RESPELT, "respelt.yaml")) == set()


def test_mlflow_threads_and_gpus_rerun_nothing(build):
    assert build.dry_run(build.config(NEUTRAL, "neutral.yaml")) == set()


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("resnet101: {img_size: 32, epochs: 1, batch_size: 8, lr: 0.001,",
         "resnet101: {img_size: 32, epochs: 1, batch_size: 8, lr: 0.002,", RESNET_CHAIN),
        ("unet: {img_size: 32, epochs: 1, batch_size: 8, lr: 0.001,",
         "unet: {img_size: 32, epochs: 1, batch_size: 8, lr: 0.002,", UNET_CHAIN),
        ("unet: {img_size: 32,", "unet: {img_size: 48,",
         UNET_CHAIN | {f"arrays[48,{split},{s}]" for split in SPLITS for s in SHARDS}),
        # the classifiers use their val-chosen thresholds; the submission, its tuned one
        ("preprocess:", "evaluate: {threshold: 0.4}\npreprocess:", {"evaluate[unet]", "report", "all"}),
        ("baseline: {img_size: 32}", "baseline: {img_size: 32, C: 1.0}", BASELINE_CHAIN),
        # the manifest is a checkpoint: a dry run lists all that follows it (a real run
        # then skips the shards whose slices came out the same)
        ("preprocess:", "split: {seed: 43}\npreprocess:", EVERYTHING),
        ("preprocess:", "qc: {max_rejected_fraction: 0.02}\npreprocess:", EVERYTHING),
    ],
    ids=["classifier lr", "unet lr", "unet img_size", "evaluate threshold", "baseline C", "split seed",
         "qc fraction"],
)  # fmt: skip
def test_a_setting_reruns_its_stage_and_what_follows(build, old, new, expected):
    old, new = (text.replace("{", "{{").replace("}", "}}") for text in (old, new))  # CONFIG is a template
    assert old in CONFIG
    assert build.dry_run(build.config(CONFIG.replace(old, new), "changed.yaml")) == expected


@pytest.mark.parametrize(
    "path, expected",
    [
        # postprocess and the submission score and draw boxes with it; no trainer reaches it
        ("src/pneumoflow/models/metrics.py", EVALUATION | {"postprocess", "submission"}),
        ("src/pneumoflow/models/postprocessing.py", EVALUATION | {"postprocess", "submission"}),
        ("src/pneumoflow/training/classifier.py", RESNET_CHAIN),
        ("src/pneumoflow/models/baseline.py", BASELINE_CHAIN | EVALUATION | {"submission"}),
        ("src/pneumoflow/models/unet.py", UNET_CHAIN),
        ("src/pneumoflow/stages/evaluate.py", EVALUATION),
        ("src/pneumoflow/stages/report.py", {"report", "all"}),
        ("src/pneumoflow/formats/masks.py", EVERYTHING - {"manifest", "qc_rejected"} - DICOM_TO_JPG),
        ("src/pneumoflow/sources/rsna.py", EVERYTHING),
        ("scripts/train_unet.py", UNET_CHAIN),
        ("envs/torch.yaml", RESNET_CHAIN | BASELINE_CHAIN),
        ("envs/report.yaml", {"report", "all"}),
    ],
)  # fmt: skip
def test_a_module_or_env_reruns_the_rules_that_reach_it(build, path, expected):
    with edited(build.repo / path):
        assert build.dry_run() == expected
    assert build.dry_run() == set()


def _train_image(build: Build) -> pd.Series:
    manifest = pd.read_csv(build.work / "results/manifest.tsv", sep="\t", dtype={"patientId": str})
    return manifest[manifest.split == "train"].iloc[0]


def test_a_replaced_image_reruns_its_shard_and_split_only(build):
    row = _train_image(build)
    path = build.data / "stage_2_train_images" / f"{row.patientId}.dcm"
    ds = pydicom.dcmread(path)
    case = Case(row.patientId, row["class"], view=ds.ViewPosition, sex=ds.PatientSex, age=int(ds.PatientAge))
    write_dicom(path, 255 - ds.pixel_array, case)  # same header, other pixels
    shard = f"{row.shard:02d}"
    ran = build.run("--until", "arrays", "qc_rejected")
    assert ran == {"manifest", f"dicom_to_jpg[{shard}]", f"arrays[32,train,{shard}]"}
    assert build.dry_run() == TRAINING


def _manifest(build: Build) -> pd.DataFrame:
    return pd.read_csv(build.work / "results/manifest.tsv", sep="\t", dtype={"patientId": str})


def test_an_added_image_reruns_its_shard_and_the_splits_it_changes(build):
    # (after the replaced image: training is pending, preprocessing is up to date)
    before = _manifest(build)
    labels = pd.read_csv(build.data / "stage_2_train_labels.csv")
    classes = pd.read_csv(build.data / "stage_2_detailed_class_info.csv")
    pid = "added-patient-0001"
    ds = pydicom.dcmread(build.data / "stage_2_train_images" / f"{before.patientId[0]}.dcm")
    write_dicom(build.data / "stage_2_train_images" / f"{pid}.dcm", ds.pixel_array, Case(pid, "Normal"))
    labels = pd.concat([labels, pd.DataFrame([{"patientId": pid, "Target": 0}])], ignore_index=True)
    labels.to_csv(build.data / "stage_2_train_labels.csv", index=False)
    classes = pd.concat([classes, pd.DataFrame([{"patientId": pid, "class": "Normal"}])], ignore_index=True)
    classes.to_csv(build.data / "stage_2_detailed_class_info.csv", index=False)

    ran = build.run("--until", "arrays", "qc_rejected")

    after = _manifest(build)
    new = after.set_index("patientId").loc[pid]
    shard = f"{new.shard:02d}"
    # the split is stratified by rank within a class, so one patient more may move a
    # neighbour at a cut (val -> train, test -> val): those (split, shard) arrays rerun too
    moved = after.merge(before, on="patientId", how="left", suffixes=("", "_before"))
    moved = moved[moved.split != moved.split_before]
    touched = {(r.split, f"{r.shard:02d}") for r in moved.itertuples()} | {
        (r.split_before, f"{r.shard:02d}") for r in moved.itertuples() if isinstance(r.split_before, str)
    }
    # a shard whose member changed split reruns too: its per-split indexes change
    shards = {shard} | {s for _, s in touched}
    assert ran == {"manifest"} | {f"{rule}[{s}]" for rule in ("dicom_to_jpg", "masks") for s in shards} | {
        f"arrays[32,{split},{s}]" for split, s in touched
    }
    assert len(touched) < len(SPLITS) * len(SHARDS)
    assert build.dry_run() == TRAINING
