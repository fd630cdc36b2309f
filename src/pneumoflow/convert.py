"""The dicom_to_jpg stage: one shard of DICOMs -> 8-bit JPGs named <patientId>.jpg."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from pneumoflow import qc
from pneumoflow.atomic import atomic_dir
from pneumoflow.dicomheader import DicomError
from pneumoflow.dicomscan import copyable_frame
from pneumoflow.qc import Rejection
from pneumoflow.tables import read_manifest, write_tsv

log = logging.getLogger(__name__)

JPEG_QUALITY = 95


def dicom_to_jpg_bytes(path: str | Path) -> tuple[bytes | memoryview, bool]:
    """(JPG bytes, copied) for one DICOM; copied=True when the frame was passed through. The fast
    path's bytes are a view into the file's bytes (dicomscan.copyable_frame).

    Raises DicomError when the file cannot be read or decoded.
    """
    frame = copyable_frame(path)  # RSNA's files, without pydicom's parse of the whole file
    if frame is not None:
        return frame, True
    return _via_pydicom(path)


def _via_pydicom(path: str | Path) -> tuple[bytes, bool]:
    # imported here: a shard whose files all take the fast path never loads pydicom or OpenCV
    import cv2

    from pneumoflow.dicomio import copyable_jpeg, read_dataset, to_uint8

    ds = read_dataset(path)
    frame = copyable_jpeg(ds)
    if frame is not None:
        return frame, True
    ok, encoded = cv2.imencode(".jpg", to_uint8(ds), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DicomError("OpenCV could not encode the decoded image as JPG")
    return encoded.tobytes(), False


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
        for pid in tqdm(ids, desc=f"dicom_to_jpg shard {shard}", unit="img", disable=None):
            path = Path(dicom_dir) / f"{pid}.dcm"
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
