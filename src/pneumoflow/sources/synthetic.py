"""A synthetic RSNA Pneumonia Detection Challenge sample, in the real layout and encoding.

Each image is drawn like a PA/AP chest radiograph (body, lung fields, mediastinum,
ribs, noise); `Lung Opacity` images get 1-4 boxes, each holding a soft bright
opacity that a model can learn. Files are JPEG Baseline 8-bit DICOMs, 1024x1024
by default, MONOCHROME2, Modality CR, with a fake PatientName that must never
reach any output. The same seed gives the same bytes.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pydicom.config
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from pneumoflow.core.atomic import atomic_path
from pneumoflow.sources.rsna_layout import CLASSES_CSV, LABELS_CSV, TEST_DIR, TRAIN_DIR

log = logging.getLogger(__name__)

CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
CLASS_WEIGHTS = (0.3, 0.4, 0.3)
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


@dataclass
class Case:
    """One generated patient: id, class, boxes (x, y, w, h) in pixels, header fields."""

    patient_id: str
    klass: str
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    view: str = "PA"
    sex: str = "M"
    age: int = 50


def draw_chest(rng: np.random.Generator, size: int, klass: str) -> tuple[np.ndarray, list]:
    """Draw one radiograph: ((size, size) uint8 MONOCHROME2 image, boxes in pixels)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.full((size, size), 0.08, np.float32)
    body = ((xx - 0.5) / 0.46) ** 2 + ((yy - 0.58) / 0.55) ** 2 < 1
    image[body] = 0.55
    lungs = []
    for side in (-1, 1):
        cx, cy = 0.5 + side * rng.uniform(0.17, 0.2), rng.uniform(0.45, 0.5)
        rx, ry = rng.uniform(0.12, 0.15), rng.uniform(0.27, 0.31)
        lung = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        image[lung] = 0.22
        lungs.append((cx, cy, rx, ry))
        # ribs: bright arcs across each lung field
        for k in range(9):
            arc = cy - ry + 0.07 * k + 0.8 * (xx - cx + side * 0.1) ** 2
            image[lung & (np.abs(yy - arc) < 0.008)] += 0.13
    heart_width = 0.1 if klass != "No Lung Opacity / Not Normal" else rng.uniform(0.16, 0.2)
    mediastinum = (np.abs(xx - 0.5) < 0.05) & (yy > 0.12) | (
        ((xx - 0.52) / heart_width) ** 2 + ((yy - 0.66) / 0.14) ** 2 < 1
    )
    image[mediastinum & body] = 0.75
    if klass == "No Lung Opacity / Not Normal":
        # a support-device line, a common "not normal" finding
        x0 = rng.uniform(0.4, 0.6)
        image[(np.abs(xx - x0 - 0.15 * yy) < 0.003) & (yy > 0.1) & (yy < 0.7)] = 0.95
    boxes = _draw_opacities(rng, image, lungs, size) if klass == "Lung Opacity" else []
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=size / 300)
    image += rng.normal(0, 0.025, image.shape).astype(np.float32)
    return np.clip(image * 255, 0, 255).astype(np.uint8), boxes


def _draw_opacities(rng, image, lungs, size) -> list[tuple[int, int, int, int]]:
    boxes = []
    for _ in range(int(rng.integers(1, 5))):
        cx, cy, rx, ry = lungs[int(rng.integers(0, 2))]
        w, h = rng.uniform(0.08, 0.16), rng.uniform(0.1, 0.22)
        x = cx + rng.uniform(-rx * 0.5, rx * 0.5) - w / 2
        y = cy + rng.uniform(-ry * 0.5, ry * 0.5) - h / 2
        x0, y0 = int(x * size), int(y * size)
        bw, bh = int(w * size), int(h * size)
        yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float32)
        blob = np.exp(-(((xx - bw / 2) / (bw / 2.6)) ** 2 + ((yy - bh / 2) / (bh / 2.6)) ** 2))
        image[y0 : y0 + bh, x0 : x0 + bw] += 0.35 * blob
        boxes.append((x0, y0, bw, bh))
    return boxes


def new_case(rng: np.random.Generator, klass: str) -> Case:
    """Random header fields for a patient of class `klass` (id drawn from `rng`)."""
    patient_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
    view = "AP" if rng.random() < (0.6 if klass == "Lung Opacity" else 0.35) else "PA"
    sex = "M" if rng.random() < 0.57 else "F"
    return Case(patient_id, klass, view=view, sex=sex, age=int(rng.integers(18, 90)))


def fake_phi(patient_id: str) -> dict[str, str]:
    """Made-up identifying header values of one synthetic image (DICOM keyword -> value)."""
    return {
        "PatientName": f"Fakename^Synthetic{patient_id[:8]}",
        "PatientBirthDate": "19010203",
        "InstitutionName": "Fakeville Synthetic Infirmary",
        "OtherPatientIDs": f"FAKEMRN{patient_id[:8]}",
    }


def write_dicom(path: str | Path, pixels: np.ndarray, case: Case, *, jpeg: bool = True, **extra) -> None:
    """Write `pixels` ((rows, cols) uint8 or uint16) as a CR DICOM for `case`.

    jpeg=True encodes 8-bit pixels as an encapsulated JPEG Baseline frame, the
    encoding of the real RSNA files; jpeg=False stores them uncompressed.
    `extra` sets further attributes (e.g. PhotometricInterpretation, RescaleSlope).
    """
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    ds.SOPClassUID = CR_IMAGE_STORAGE
    uid = generate_uid(entropy_srcs=[case.patient_id])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[case.patient_id, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[case.patient_id, "series"])
    ds.PatientID = case.patient_id
    # Fake identifying data where real files carry it, so tests can prove none of it leaks.
    for keyword, value in fake_phi(case.patient_id).items():
        setattr(ds, keyword, value)
    # RSNA writes PatientAge as a bare number, not a valid AS value ('051Y');
    # we reproduce the real files, so pydicom's value check is off for it.
    ds.add(DataElement(0x00101010, "AS", str(case.age), validation_mode=pydicom.config.IGNORE))
    ds.PatientSex = case.sex
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = case.view
    ds.ConversionType = "WSD"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8 * pixels.dtype.itemsize
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for key, value in extra.items():
        setattr(ds, key, value)
    if jpeg:
        if pixels.dtype != np.uint8:
            raise ValueError(f"JPEG Baseline holds 8-bit pixels, got {pixels.dtype}")
        ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([encoded.tobytes()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = pixels.tobytes()
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def generate(
    out_dir: str | Path,
    n: int = 240,
    seed: int = 7,
    size: int = 1024,
    n_test: int | None = None,
    workers: int = 1,
) -> list[Case]:
    """Write an RSNA-layout sample of `n` training images (+ test images) to `out_dir`.

    Image i depends only on (seed, i), so `workers` processes write the same files as one.
    """
    if n < 3:
        raise ValueError(f"n must be >= 3 so that all three classes appear, got {n}")
    out = Path(out_dir)
    n_test = max(3, n // 20) if n_test is None else n_test
    jobs = [(out, seed, size, i, i < n) for i in range(n + n_test)]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            cases = pool.starmap(_write_case, jobs, chunksize=max(1, min(64, len(jobs) // (4 * workers))))
    else:
        cases = [_write_case(*job) for job in jobs]
    _write_csvs(out, cases[:n])
    log.info("wrote %d training and %d test DICOMs to %s", n, n_test, out)
    return cases[:n]


def _write_case(out: Path, seed: int, size: int, i: int, train: bool) -> Case:
    rng = np.random.default_rng([seed, i])
    klass = CLASSES[i] if i < 3 else CLASSES[rng.choice(3, p=CLASS_WEIGHTS)]
    case = new_case(rng, klass)
    pixels, case.boxes = draw_chest(rng, size, klass)
    write_dicom(out / (TRAIN_DIR if train else TEST_DIR) / f"{case.patient_id}.dcm", pixels, case)
    return case


def _write_csvs(out: Path, cases: list[Case]) -> None:
    with atomic_path(out / LABELS_CSV) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["patientId", "x", "y", "width", "height", "Target"])
        no_box: list[tuple[str, ...]] = [("", "", "", "")]
        for case in cases:
            target = int(bool(case.boxes))
            for box in case.boxes or no_box:
                writer.writerow([case.patient_id, *box, target])
    with atomic_path(out / CLASSES_CSV) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["patientId", "class"])
        writer.writerows([c.patient_id, c.klass] for c in cases for _ in range(max(1, len(c.boxes))))
