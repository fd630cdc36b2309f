"""Reliability: bad inputs, untrusted files, privacy, full disks, a dying MLflow server."""

from __future__ import annotations

import gc
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from pneumoflow.core.ids import shard_name, shard_of
from pneumoflow.formats.arrays import load_arrays
from pneumoflow.sources.rsna import convert_shard
from pneumoflow.sources.synthetic import Case, write_dicom
from pneumoflow.tracking import model_run, run_cache
from pneumoflow.tracking.client import connect
from pneumoflow.tracking.settings import TrackingSettings

REPO = Path(__file__).resolve().parents[1]
PHI_KEYWORDS = ("PatientName", "PatientBirthDate", "InstitutionName", "OtherPatientIDs")


# --- privacy -------------------------------------------------------------------------------


@pytest.mark.e2e
def test_no_phi_in_results_mlflow_store_or_logs(tiny_run):
    """The sample DICOMs carry (fake) name, birth date, institution and other ids: none of it
    may reach any file under results/ (MLflow store included), logs/ or Snakemake's logs."""
    needles = set()
    for dicom in sorted((tiny_run / "data/synthetic/stage_2_train_images").glob("*.dcm")):
        ds = pydicom.dcmread(dicom, stop_before_pixels=True)
        raw = dicom.read_bytes()
        for keyword in PHI_KEYWORDS:
            value = str(ds.data_element(keyword).value).encode()
            assert value in raw  # the test can fail: the inputs really hold it
            needles.add(value)
    assert len(needles) > 2 * len(PHI_KEYWORDS)
    scanned = 0
    for folder in ("results", "logs", ".snakemake/log", ".snakemake/metadata"):
        for path in (tiny_run / folder).rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                leaked = [n for n in needles if n in data]
                assert not leaked, f"{path} holds {leaked[:3]}"
                scanned += 1
    assert (tiny_run / "results/mlflow.db").is_file() and scanned > 100


# the first line of a rule's `benchmark:` file
SNAKEMAKE_BENCHMARK_HEADER = (
    b"s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
)
# a log record's time, "2026-11-27 17:23:40,105": its milliseconds are no age
LOG_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def _age_hits(path: Path, ages: tuple[int, ...], others: set[str]) -> list[str]:
    """Where any of `ages` stands in a file as a number of its own (not inside an id, a longer
    number, a decimal or a percentage), or in DICOM's form (091Y). Lines that name one of the `others`
    patientIds are rows about those patients (their boxes and sizes are numbers too) and are
    passed over, and so are MLflow's system metrics (`system/...` rows: the machine's CPU and
    memory readings, where 91.0 is an ordinary CPU percentage), and so are Snakemake's
    `benchmark:` files (a job's seconds and MB) and a log record's time stamp. An sqlite database (the MLflow
    store) is read through its SQL dump, every other file as text where it decodes as UTF-8;
    binary files (images, weights, arrays) are searched for the DICOM form only."""
    data = path.read_bytes()
    if data.startswith(SNAKEMAKE_BENCHMARK_HEADER):
        return []  # Snakemake's readings of a job (seconds, MB, load): 91.00 MB is an ordinary PSS
    if data.startswith(b"SQLite format 3"):
        import sqlite3

        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            data = "\n".join(db.iterdump()).encode()
    hits = [f"{a:03d}Y" for a in ages if f"{a:03d}Y".encode() in data]
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return hits
    number = re.compile(r"(?<![\w.+-])(" + "|".join(map(str, ages)) + r")(?:\.0+)?(?![\w.%])")
    for line in text.splitlines():
        if (
            number.search(LOG_TIMESTAMP.sub("", line))
            and "'system/" not in line
            and not any(pid in line for pid in others)
        ):
            hits.append(line[:200])
    return hits


def test_age_search_skips_log_times_but_finds_ages_in_the_message(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("2026-11-27 17:23:40,105 INFO pneumoflow: 12 images\n")
    assert _age_hits(log, (91, 105), set()) == []
    log.write_text("2026-11-27 17:23:40,001 INFO pneumoflow: age 105 kept\n")
    assert _age_hits(log, (91, 105), set()) == ["2026-11-27 17:23:40,001 INFO pneumoflow: age 105 kept"]
    bench = tmp_path / "job.tsv"  # a job's readings: 91.00 MB of PSS is no age
    bench.write_bytes(
        SNAKEMAKE_BENCHMARK_HEADER
        + b"1.26\t0:00:01\t193.91\t1519.18\t62.73\t91.00\t0.00\t0.11\t32.55\t0.71\n"
    )
    assert _age_hits(bench, (91, 105), set()) == []
    bench.write_bytes(b"s\tage\n1.26\t91.00\n")  # any other table is searched
    assert _age_hits(bench, (91, 105), set()) == ["1.26\t91.00"]


@pytest.mark.e2e
def test_ages_over_89_are_stored_as_90_and_found_nowhere(tmp_path):
    """Ages 91 and 105 planted in two DICOM headers (as 091Y and as RSNA's bare 105): the
    manifest holds 90 for both ("90 or more"), and neither number is in any file under results/
    (the MLflow store included), logs/ or Snakemake's logs."""
    from conftest import TINY, snakemake

    from pneumoflow.sources.synthetic import generate

    data = tmp_path / "rsna"
    cases = generate(data, n=30, seed=5, size=256)
    # two patients without boxes, so that no box coordinate of theirs can look like an age
    planted = dict(zip([c.patient_id for c in cases if c.klass == "Normal"], ("091Y", "105"), strict=False))
    for pid, age in planted.items():
        ds = pydicom.dcmread(data / "stage_2_train_images" / f"{pid}.dcm")
        ds.PatientAge = age
        ds.save_as(data / "stage_2_train_images" / f"{pid}.dcm")
    others = {p.stem for p in data.rglob("*.dcm")} - set(planted)
    config = tmp_path / "ages.yaml"
    config.write_text(
        f"data: {{source: rsna, rsna_dir: '{data}'}}\n"
        "models: {vgg16: {enabled: false}, resnet101: {enabled: false}}\n"
    )
    workdir = tmp_path / "run"
    result = snakemake(workdir, "--configfile", str(TINY), str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = pd.read_csv(workdir / "results/manifest.tsv", sep="\t", dtype={"patientId": str})
    ages = manifest.set_index("patientId").age
    assert len(planted) == 2 and [ages[pid] for pid in planted] == [90, 90]
    assert ages.max() == 90 and (ages < 90).sum() > 20  # the others keep their exact age
    scanned = 0
    for folder in ("results", "logs", ".snakemake/log", ".snakemake/metadata"):
        for path in (workdir / folder).rglob("*"):
            if path.is_file():
                hits = _age_hits(path, (91, 105), others)
                assert not hits, f"{path} holds {hits[:3]}"
                scanned += 1
    assert (workdir / "results/mlflow.db").is_file() and scanned > 50


# --- untrusted files --------------------------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_npz_with_pickled_objects_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    _Payload.marker = marker
    evil = tmp_path / "evil.npz"
    np.savez(evil, images=np.array([_Payload()], dtype=object), labels=np.zeros(1, np.uint8))
    with pytest.raises(ValueError, match="holds pickled Python objects, which are never loaded"):
        load_arrays([evil], keys=("images", "labels"))
    disguised = tmp_path / "disguised.npz"
    disguised.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(ValueError, match="is not an arrays file made by the arrays stage"):
        load_arrays([disguised], keys=("images",))
    assert not marker.exists()  # the payload never ran


# --- bad-input corpus -------------------------------------------------------------------------


def _dicom(folder: Path, pid: str, pixels=None, **extra) -> Path:
    path = folder / f"{pid}.dcm"
    image = np.full((64, 64), 100, np.uint8) if pixels is None else pixels
    write_dicom(path, image, Case(pid, "Normal"), jpeg=extra.pop("jpeg", False), **extra)
    return path


def _bad_dicoms(images: Path) -> dict[str, str]:
    """Write one bad file per case; {patientId: expected part of the qc reason}."""
    good = _dicom(images, "good0").read_bytes()
    cases = {}
    (images / "truncated.dcm").write_bytes(good[: len(good) // 2])
    cases["truncated"] = "truncated"
    (images / "zerobyte.dcm").write_bytes(b"")
    cases["zerobyte"] = "unreadable DICOM"
    (images / "notdicom.dcm").write_text("patientId,Target\nx,1\n")
    cases["notdicom"] = "unreadable DICOM"
    _dicom(images, "ctscan", Modality="CT")
    cases["ctscan"] = "modality 'CT' is not a radiograph"
    colour = _dicom(images, "colour")
    ds = pydicom.dcmread(colour)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = ds.PixelData * 3
    ds.save_as(colour)
    cases["colour"] = "colour image"
    frames = _dicom(images, "multiframe")
    ds = pydicom.dcmread(frames)
    ds.NumberOfFrames, ds.PixelData = 2, ds.PixelData * 2
    ds.save_as(frames)
    cases["multiframe"] = "multi-frame"
    huge = _dicom(images, "huge")
    ds = pydicom.dcmread(huge)
    ds.Rows = ds.Columns = 60000  # declares 3.6 GB of pixels, holds 4 kB
    ds.save_as(huge)
    cases["huge"] = "implausible image size 60000x60000"
    big = _dicom(images, "bigheader")
    ds = pydicom.dcmread(big)
    ds.Rows = ds.Columns = 8000  # plausible size, far more than the pixel data holds
    ds.save_as(big)
    cases["bigheader"] = "truncated pixel data"
    return cases


def test_bad_input_corpus_each_case_refused_with_its_reason(tmp_path):
    data = tmp_path / "rsna"
    images = data / "stage_2_train_images"
    images.mkdir(parents=True)
    for i in range(1, 40):
        _dicom(images, f"good{i}")
    expected = _bad_dicoms(images)
    ids = [f"good{i}" for i in range(40)] + list(expected)
    rows = [f"{pid},,,,,0" for pid in ids]
    rows += ["good1,,,,,0"]  # a duplicated row: dropped, noted
    rows += ["outside,10,10,80,80,1"]  # a box reaching past the 64 px image
    rows += ["../etc/passwd,,,,,0"]  # an id with a path separator
    _dicom(images, "outside")
    expected |= {
        "outside": "reaches outside the 64x64 image",
        "../etc/passwd": "is not a plain identifier (path separators",
    }
    # Windows line endings and a BOM, plus an extra column: all tolerated
    header = "\ufeffpatientId,x,y,width,height,Target\r\n"
    (data / "stage_2_train_labels.csv").write_text(header + "\r\n".join(rows) + "\r\n", encoding="utf-8")
    classes = pd.DataFrame({"patientId": [*ids, "outside", "../etc/passwd"], "extra": "x"})
    classes["class"] = ["Normal"] * (len(ids)) + ["Lung Opacity", "Normal"]
    classes.to_csv(data / "stage_2_detailed_class_info.csv", index=False)

    before = {p for p in tmp_path.rglob("*")}
    # the manifest command, reporting its own peak RSS (kB) on its last stderr line
    # (VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent)
    run_cli = (
        "import re, sys; from pneumoflow.cli import main; code = main(sys.argv[1:]); "
        "status = open('/proc/self/status').read(); "
        "print(re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr); sys.exit(code)"
    )
    cmd = [sys.executable, "-c", run_cli, "manifest", *(str(data / n) for n in (
        "stage_2_train_labels.csv", "stage_2_detailed_class_info.csv", "stage_2_train_images")),
        "--out-dir", "results", "--shards", "2", "--max-rejected-fraction", "0.5"]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    written = {p for p in tmp_path.rglob("*")} - before
    assert written and all(p.relative_to(tmp_path).parts[0] == "results" for p in written)
    # the 60000 x 60000 header allocated nothing like its 3.6 GB
    assert int(result.stderr.split()[-1]) < 1_000_000  # kB

    rejected = pd.read_csv(tmp_path / "results/qc/manifest_rejected.tsv", sep="\t", dtype=str)
    reasons = dict(zip(rejected.patientId, rejected.reason, strict=True))
    for pid, reason in expected.items():
        assert pid in reasons, f"{pid} was not refused"
        assert reason in reasons[pid], f"{pid}: {reasons[pid]!r}"
    manifest = pd.read_csv(tmp_path / "results/manifest.tsv", sep="\t")
    assert sorted(manifest.patientId) == sorted(f"good{i}" for i in range(40))


@pytest.mark.parametrize(
    ("header", "message"),
    [("patientId,x,y,width,Target", "missing column(s) ['height']"), ("", "not a readable CSV")],
)
def test_labels_csv_without_its_columns_stops_naming_them(tmp_path, header, message):
    (tmp_path / "labels.csv").write_text(header + "\n" if header else "")
    (tmp_path / "classes.csv").write_text("patientId,class\n")
    (tmp_path / "images").mkdir()
    cmd = [sys.executable, "-m", "pneumoflow", "manifest", "labels.csv", "classes.csv", "images",
           "--out-dir", "results"]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and message in result.stderr and "labels.csv" in result.stderr
    assert not (tmp_path / "results").exists()


# --- a full disk during a shard ---------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MB tmpfs (root only); skipped with the reason where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    # lazy: a file a test leaked open must not fail the teardown
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


@pytest.mark.needs("tmpfs")
def test_disk_full_during_a_shard_leaves_no_partial_output(tiny_disk, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):  # noise compresses badly: ~150 kB JPGs, more than the disk holds
        _dicom(images, f"p{i}", rng.integers(0, 255, (512, 512), dtype=np.uint8), jpeg=True)
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("patientId\tshard\n" + "".join(f"p{i}\t0\n" for i in range(12)))
    with pytest.raises(OSError, match="No space left on device"):
        convert_shard(manifest, 0, images, tiny_disk / "jpg" / "00", tiny_disk / "00.tsv")
    assert list((tiny_disk / "jpg").iterdir()) == []  # no shard folder, no temp folder
    out = tmp_path / "jpg" / "00"  # with room, the same call completes
    convert_shard(manifest, 0, images, out, tmp_path / "00.tsv")
    assert len(list(out.glob("*.jpg"))) == 12


@pytest.mark.needs("tmpfs")
def test_disk_full_during_a_training_checkpoint_names_the_file(tiny_disk, tmp_path):
    """torch.save on a full disk raises an opaque RuntimeError; the user gets ENOSPC and the path."""
    import torch
    import torchvision
    from conftest import RecordingRun

    from pneumoflow.training.classifier import ClassifierConfig, fit

    rng = np.random.default_rng(0)
    split = (rng.integers(0, 255, (8, 32, 32), dtype=np.uint8), np.arange(8, dtype=np.uint8) % 2)
    # the seed's ResNet101 head (2048 -> 128 -> 2) is 1 MB of weights, more than the disk holds;
    # the weights file stands in for ImageNet's and lives off the small disk
    weights = tmp_path / "resnet101.pth"
    torch.save(torchvision.models.resnet101().state_dict(), weights)
    cfg = ClassifierConfig("resnet101", img_size=32, weights=str(weights), epochs=1, batch_size=8)
    with pytest.raises(OSError, match=f"No space left on device writing {tiny_disk}/") as caught:
        fit(cfg, split, split, model_out=tmp_path / "m.pt", checkpoint=tiny_disk / "ck.pt",
            run=RecordingRun(), fingerprint="fp")  # fmt: skip
    assert isinstance(caught.value.__cause__, RuntimeError)  # what torch itself raised
    assert list(tiny_disk.iterdir()) == []  # no partial checkpoint left behind
    del caught  # its traceback holds torch's writer, whose open file would keep the tmpfs busy
    gc.collect()
    assert not (tmp_path / "m.pt").exists()


# --- the MLflow server dies mid-training ------------------------------------------------------


def test_mlflow_server_killed_mid_training(mlflow_server_factory, tmp_path, monkeypatch, caplog):
    """Training goes on while the server is gone; the job then fails naming the URI and keeps its
    training state; with the server back, the rerun finishes without training again."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    server = mlflow_server_factory()
    settings = TrackingSettings(tracking_uri=server.url, experiment="dying")
    outputs = {"model.txt": tmp_path / "out/model.txt"}
    state = tmp_path / "state.txt"  # stands in for the training checkpoint
    epochs_run = []

    def work(run):
        start = int(state.read_text()) if state.exists() else 0
        for epoch in range(start, 4):
            if epoch == 2:
                server.stop()
            run.log_metrics({"train_loss": 1.0 / (epoch + 1)}, step=epoch)
            epochs_run.append(epoch)
            state.write_text(str(epoch + 1))
        outputs["model.txt"].parent.mkdir(exist_ok=True)
        outputs["model.txt"].write_text("trained")

    kwargs = dict(name="vgg16", params={}, tags={}, fingerprint_parts={"x": 1}, outputs=outputs,
                  run_id_out=tmp_path / "out/run_id.txt", on_success=state.unlink)  # fmt: skip
    with pytest.raises(model_run.TrackingUnavailableError, match=f"{server.url} went away during training"):
        run_cache.run_tracked(settings, work=work, **kwargs)
    assert epochs_run == [0, 1, 2, 3]  # every epoch trained although the server was gone
    assert "held back; training goes on" in caplog.text
    assert state.read_text() == "4"  # the training state survived the failed job
    server.start()
    run_id = run_cache.run_tracked(settings, work=work, **kwargs)
    assert epochs_run == [0, 1, 2, 3] and not state.exists()  # nothing retrained, state dropped
    client = connect(settings)
    assert client.get_run(run_id).info.status == "FINISHED"
    shutil.rmtree(tmp_path / "out")


# --- an input replaced between runs ---------------------------------------------------------


@pytest.mark.e2e
def test_dicom_replaced_by_garbage_between_runs_is_refused_on_rerun(sample_dir, tmp_path):
    from conftest import snakemake

    data = tmp_path / "rsna"
    shutil.copytree(sample_dir, data)
    config = tmp_path / "rsna.yaml"
    config.write_text(
        f"data: {{source: rsna, rsna_dir: '{data}'}}\npreprocess: {{shards: 3}}\n"
        "qc: {max_rejected_fraction: 0.2}\nmodels: {unet: {img_size: 32}, vgg16: {img_size: 32}, "
        "resnet101: {img_size: 32}, baseline: {img_size: 32}}\n"
    )
    # the arrays as targets: `--until arrays` stops after the checkpoints on a fresh run (their
    # downstream jobs are only known once they have run)
    arrays = [
        f"results/arrays/32px/{split}/{s:02d}.npz" for split in ("train", "val", "test") for s in range(3)
    ]
    args = [*arrays, "results/qc/rejected.tsv", "--configfile", str(config)]
    workdir = tmp_path / "run"
    first = snakemake(workdir, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    victim = sorted((data / "stage_2_train_images").glob("*.dcm"))[0]
    before = pd.read_csv(workdir / "results/manifest.tsv", sep="\t", dtype={"patientId": str})
    victim.write_bytes(b"garbage, not a DICOM" * 10)
    second = snakemake(workdir, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout + second.stderr
    # the victim's shard reruns, and any shard where the stratified split moved a neighbour to
    # another split (its per-split indexes change); no other shard
    after = pd.read_csv(workdir / "results/manifest.tsv", sep="\t", dtype={"patientId": str})
    moved = after.merge(before, on="patientId", suffixes=("", "_before")).query("split != split_before")
    allowed = {shard_name(shard_of(victim.stem, 3))} | {f"{s:02d}" for s in moved.shard}
    job = r"checkpoint dicom_to_jpg:\n(?:\s+.*\n)*?\s+reason: .*\n\s+wildcards: shard=(\d+)"
    reran = set(re.findall(job, out))
    assert shard_name(shard_of(victim.stem, 3)) in reran and reran <= allowed, (reran, allowed)
    rejected = pd.read_csv(workdir / "results/qc/rejected.tsv", sep="\t", dtype=str)
    row = rejected[rejected.patientId == victim.stem]
    assert len(row) == 1 and "unreadable DICOM" in row.reason.iloc[0]
    manifest = pd.read_csv(workdir / "results/manifest.tsv", sep="\t", dtype={"patientId": str})
    assert victim.stem not in set(manifest.patientId) and len(manifest) == 11
    ids = np.concatenate(
        [np.load(p)["patient_ids"] for p in (workdir / "results/arrays/32px").rglob("*.npz")]
    )
    assert victim.stem not in set(ids) and len(ids) == 11
