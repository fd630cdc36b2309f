"""The manifest stage: labels + class CSV + DICOM headers -> one row per usable image.

Also writes every image's boxes (boxes.tsv) and every refused input (rejected.tsv).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pneumoflow import qc
from pneumoflow.dicomheader import DicomError
from pneumoflow.dicomscan import header_info
from pneumoflow.ids import is_plain_id, shard_of
from pneumoflow.labels import DUPLICATE_ROW, Labels, read_labels
from pneumoflow.qc import Rejection
from pneumoflow.split import assign_splits
from pneumoflow.tables import write_tsv

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "patientId",
    "split",
    "shard",
    "target",
    "class",
    "n_boxes",
    "view",
    "sex",
    "age",
    "rows",
    "cols",
]
BOX_COLUMNS = ["patientId", "x", "y", "width", "height"]


class QCError(RuntimeError):
    """Too many inputs were refused for the run to be trusted."""


def list_dicoms(dicom_dir: str | Path) -> dict[str, Path]:
    """{patientId: path} for every *.dcm directly in `dicom_dir`."""
    folder = Path(dicom_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder {folder} does not exist; check data.rsna_dir in config")
    return {p.stem: p for p in sorted(folder.glob("*.dcm"))}


def _image_rows(labels: Labels, ids: list[str], dicoms: dict[str, Path], rejections: list[Rejection]):
    """Yield (patientId, DicomInfo) for the ids whose DICOM is usable and holds its boxes."""
    for pid in tqdm(ids, desc="DICOM headers", unit="img", disable=None):
        path = dicoms.get(pid)
        if path is None:
            rejections.append(Rejection("manifest", "-", pid, "no DICOM file for this patientId"))
            continue
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
    from pneumoflow import dicomio  # imported here: RSNA's files never need pydicom

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


def check_rejected_fraction(n_refused: int, n_candidates: int, max_fraction: float, where: str) -> None:
    """Raise QCError when more than `max_fraction` of the candidate images were refused."""
    fraction = n_refused / max(n_candidates, 1)
    if fraction > max_fraction:
        raise QCError(
            f"{n_refused} of {n_candidates} images ({fraction:.1%}) were refused, above "
            f"qc.max_rejected_fraction={max_fraction:.1%}. Read {where} for each file or row "
            "and its reason; fix the inputs or raise qc.max_rejected_fraction in config."
        )


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
