"""The RSNA reader (data.source rsna, and the synthetic sample, which has the same layout).

The manifest: labels + class CSV + DICOM headers -> one row per usable image, every
image's boxes (boxes.tsv) and every refused input (rejected.tsv). The JPGs: each DICOM's
frame, copied when it is a JPEG already (formats.jpeg). The reader interface, shared with
sources.imagefolder, is the four functions at the end (see sources.readers).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pneumoflow.core import qc
from pneumoflow.core.atomic import atomic_dir
from pneumoflow.core.ids import is_plain_id, shard_of
from pneumoflow.core.qc import QCError, Rejection, check_rejected_fraction
from pneumoflow.core.readahead import read_ahead, read_ends_ahead
from pneumoflow.core.split import assign_splits
from pneumoflow.core.tables import BOX_COLUMNS, MANIFEST_COLUMNS, read_manifest, write_tsv
from pneumoflow.formats.dicomheader import DicomError
from pneumoflow.formats.dicomscan import header_info
from pneumoflow.formats.jpeg import dicom_to_jpg_bytes
from pneumoflow.formats.labels import DUPLICATE_ROW, Labels, read_labels
from pneumoflow.sources.rsna_layout import CLASSES_CSV, LABELS_CSV, TRAIN_DIR

log = logging.getLogger(__name__)


def list_dicoms(dicom_dir: str | Path) -> dict[str, Path]:
    """{patientId: path} for every *.dcm directly in `dicom_dir`."""
    folder = Path(dicom_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder {folder} does not exist; check data.rsna_dir in config")
    return {p.stem: p for p in sorted(folder.glob("*.dcm"))}


def _image_rows(labels: Labels, ids: list[str], dicoms: dict[str, Path], rejections: list[Rejection]):
    """Yield (patientId, DicomInfo) for the ids whose DICOM is usable and holds its boxes."""
    # Reading 26,684 headers from a cold cache waits on the disk: the next files' headers are
    # asked for while this one is parsed, in one thread (README.md, Performance: full-size
    # preprocessing under 90 s)
    ahead = read_ends_ahead([dicoms[pid] for pid in ids if pid in dicoms])
    for pid in tqdm(ids, desc="DICOM headers", unit="img", disable=None):
        if pid not in dicoms:
            rejections.append(Rejection("manifest", "-", pid, "no DICOM file for this patientId"))
            continue
        path = next(ahead)  # once the headers after it are being read
        assert path == dicoms[pid], (path, pid)  # the list above skips what this loop skips
        try:
            # the fast path reads RSNA's files; pydicom everything else, and says what is wrong
            info = header_info(path) or _read_with_pydicom(path)
        except DicomError as exc:
            rejections.append(Rejection("manifest", str(path), pid, str(exc)))
            continue
        outside = [b for b in labels.boxes[pid] if b[0] + b[2] > info.cols or b[1] + b[3] > info.rows]
        if outside:
            reason = f"box {outside[0]} reaches outside the {info.cols}x{info.rows} image"
            rejections.append(Rejection("manifest", str(path), pid, reason))
            continue
        yield pid, info


def _read_with_pydicom(path: Path):
    from pneumoflow.formats import dicomio  # imported here: RSNA's files never need pydicom

    return dicomio.check_dataset(dicomio.read_dataset(path))


def build_manifest(
    labels_csv: str | Path,
    classes_csv: str | Path,
    dicom_dir: str | Path,
    *,
    n_shards: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    max_images: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[Rejection], int]:
    """Return (manifest, boxes, rejections, n_candidates).

    `max_images` keeps the first N patients in label-CSV order (the seed study
    used the first 200). n_candidates counts every image the run considered.
    """
    labels, rejections = read_labels(labels_csv, classes_csv)
    dicoms = list_dicoms(dicom_dir)
    refused_by_csv = {r.patientId for r in rejections if r.reason != DUPLICATE_ROW}
    for pid, path in dicoms.items():
        if not is_plain_id(pid):
            rejections.append(Rejection("manifest", str(path), pid, "file name is not a plain patientId"))
        elif pid not in labels.target and pid not in refused_by_csv:
            rejections.append(Rejection("manifest", str(path), pid, "DICOM has no row in the labels CSV"))
    ids = labels.order[:max_images] if max_images else labels.order
    rows = []
    for pid, info in _image_rows(labels, ids, dicoms, rejections):
        target, klass, n_boxes = labels.target[pid], labels.klass[pid], len(labels.boxes[pid])
        shard = shard_of(pid, n_shards)
        rows.append(
            [pid, "", shard, target, klass, n_boxes, info.view, info.sex, info.age, info.rows, info.cols]
        )
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).astype({"age": "Int64"})
    manifest["split"] = assign_splits(
        manifest.patientId.tolist(), manifest["class"].tolist(), val_fraction, test_fraction, seed
    )
    boxes = pd.DataFrame(
        [(pid, *box) for pid in manifest.patientId for box in labels.boxes[pid]], columns=BOX_COLUMNS
    )
    refused = {r.patientId for r in rejections if r.reason != DUPLICATE_ROW}
    n_candidates = len(manifest) + len(refused)
    return manifest, boxes, rejections, n_candidates


def run_manifest(
    labels_csv,
    classes_csv,
    dicom_dir,
    *,
    manifest_out,
    boxes_out,
    rejected_out,
    rejected_log,
    max_rejected_fraction,
    **options,
) -> pd.DataFrame:
    """Build the manifest and write manifest, boxes and rejections (see build_manifest).

    The rejections are also written to `rejected_log`, which survives a failed
    job (Snakemake removes a failed job's outputs but keeps its logs).
    """
    manifest, boxes, rejections, n_candidates = build_manifest(labels_csv, classes_csv, dicom_dir, **options)
    rejected = qc.to_frame(rejections)
    write_tsv(rejected, rejected_log)
    n_refused = n_candidates - len(manifest)
    log.info("%d images kept, %d refused (%d qc entries)", len(manifest), n_refused, len(rejected))
    for split, count in manifest.split.value_counts().items():
        log.info("split %s: %d images", split, count)
    check_rejected_fraction(n_refused, n_candidates, max_rejected_fraction, str(rejected_log))
    if manifest.empty:
        raise QCError(f"no usable images in {dicom_dir}; read {rejected_log}")
    write_tsv(manifest, manifest_out)
    write_tsv(boxes, boxes_out)
    write_tsv(rejected, rejected_out)
    return manifest


def convert_shard(
    manifest_tsv: str | Path, shard: int, dicom_dir: str | Path, out_dir: str | Path, rejected_out: str | Path
) -> dict[str, int]:
    """Convert the shard's DICOMs into `out_dir`; refused files go to `rejected_out`.

    Returns counts {"copied", "encoded", "refused"}.
    """
    manifest = read_manifest(manifest_tsv)
    ids = manifest.loc[manifest["shard"] == shard, "patientId"]
    counts = {"copied": 0, "encoded": 0, "refused": 0}
    rejections = []
    with atomic_dir(out_dir) as out:
        paths = [Path(dicom_dir) / f"{pid}.dcm" for pid in ids]
        progress = tqdm(ids, desc=f"dicom_to_jpg shard {shard}", unit="img", disable=None)
        for pid, path in zip(progress, read_ahead(paths), strict=True):
            try:
                data, copied = dicom_to_jpg_bytes(path)
            except DicomError as exc:
                rejections.append(Rejection("dicom_to_jpg", str(path), pid, str(exc)))
                counts["refused"] += 1
                continue
            (out / f"{pid}.jpg").write_bytes(data)
            counts["copied" if copied else "encoded"] += 1
    write_tsv(qc.to_frame(rejections), rejected_out)
    log.info("shard %d: %s", shard, counts)
    return counts


# The reader interface (see sources.readers).


def list_inputs(data_dir: str | Path) -> list[tuple[str, os.DirEntry]]:
    """(patientId, DirEntry) of every candidate DICOM, for the Snakefile's listing digests."""
    folder = Path(data_dir) / TRAIN_DIR
    if not folder.is_dir():
        raise ValueError(
            f"data.rsna_dir={str(data_dir)!r} has no {TRAIN_DIR}/ folder; "
            "point it at the unpacked RSNA Pneumonia Detection Challenge download"
        )
    entries = (e for e in os.scandir(folder) if e.name.endswith(".dcm"))
    ids = ((e.name.removesuffix(".dcm"), e) for e in entries)
    return [(pid, entry) for pid, entry in ids if is_plain_id(pid)]


def source_settings(config: dict) -> dict:
    """The config values the manifest of this source reads: the split and data.max_images."""
    split = config["split"]
    return {
        "val_fraction": split["val_fraction"],
        "test_fraction": split["test_fraction"],
        "seed": split["seed"],
        "max_images": config["data"]["max_images"],
    }


def write_manifest(data_dir: str | Path, settings: dict, *, n_shards: int, **outputs) -> pd.DataFrame:
    """run_manifest on the download in `data_dir` (`outputs`: manifest_out, boxes_out,
    rejected_out, rejected_log, max_rejected_fraction)."""
    data = Path(data_dir)
    return run_manifest(
        data / LABELS_CSV, data / CLASSES_CSV, data / TRAIN_DIR, n_shards=n_shards, **settings, **outputs
    )


def write_jpgs(manifest_tsv, shard: int, data_dir, out_dir, rejected_out) -> dict[str, int]:
    """convert_shard on the download's training DICOMs."""
    return convert_shard(manifest_tsv, shard, Path(data_dir) / TRAIN_DIR, out_dir, rejected_out)
