"""`data.source: imagefolder`: a Kermany-style folder train|val|test/<CLASS>/*.jpeg as pipeline input.

The manifest takes the split from the top folder and the label from the class
folder (data.imagefolder_classes); there are no boxes, so only the classifiers
train. Files that are not decodable images are refused to qc. The manifest has
one extra column, `source`: the image's path relative to the folder.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import cv2
import pandas as pd

from pneumoflow.core import qc
from pneumoflow.core.atomic import atomic_dir
from pneumoflow.core.ids import shard_of
from pneumoflow.core.qc import QCError, Rejection, check_rejected_fraction
from pneumoflow.core.readahead import read_ahead
from pneumoflow.core.split import SPLITS
from pneumoflow.core.tables import BOX_COLUMNS, MANIFEST_COLUMNS, read_manifest, write_tsv
from pneumoflow.formats.images import JPEG_MAGIC, training_jpg

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def list_files(root: str | Path) -> list[Path]:
    """Every file under root/<split>/<class>/ (sorted), the candidates of the manifest."""
    root = Path(root)
    present = [s for s in SPLITS if (root / s).is_dir()]
    if not present:
        raise ValueError(
            f"data.imagefolder_dir={str(root)!r} has none of the folders {', '.join(SPLITS)}; expected "
            "train|val|test/<CLASS>/<image> (e.g. the Kermany chest_xray folder)"
        )
    return sorted(p for s in present for p in (root / s).glob("*/*") if p.is_file())


def image_id(relative: Path) -> str:
    """A file-name-safe, unique id for split/class/name.ext, e.g. train-PNEUMONIA-person1_bacteria_1."""
    split, klass, name = relative.parts
    plain = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{split}-{klass}-{Path(name).stem}")
    # the suffix keeps x.jpeg and x.png apart; the hash keeps sanitised names apart
    digest = hashlib.sha1(str(relative).encode()).hexdigest()[:6]
    return f"{plain}-{digest}"


def _check_image(path: Path) -> tuple[int, int]:
    """(rows, cols) of a decodable grayscale-convertible image; ValueError with the reason."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"not an image file (suffix {path.suffix or 'none'}; expected .jpg, .jpeg or .png)")
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError("cannot be decoded as an image (damaged or not really a JPG/PNG)")
    return image.shape


def build_manifest(
    root: str | Path, classes: dict[str, int], n_shards: int
) -> tuple[pd.DataFrame, list[Rejection], int]:
    """(manifest, rejections, n_candidates) of an ImageFolder tree."""
    root = Path(root)
    rows, rejections = [], []
    files = list_files(root)
    for path in files:
        relative = path.relative_to(root)
        split, klass = relative.parts[0], relative.parts[1]
        pid = image_id(relative)
        if klass not in classes:
            known = ", ".join(sorted(classes))
            reason = f"class folder {klass!r} is not in data.imagefolder_classes ({known})"
            rejections.append(Rejection("manifest", str(path), pid, reason))
            continue
        try:
            n_rows, n_cols = _check_image(path)
        except ValueError as exc:
            rejections.append(Rejection("manifest", str(path), pid, str(exc)))
            continue
        rows.append(
            [pid, split, shard_of(pid, n_shards), classes[klass], klass, 0, "", "", pd.NA, n_rows, n_cols]
            + [str(relative)]
        )
    manifest = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "source"]).astype({"age": "Int64"})
    return manifest, rejections, len(files)


def run_manifest(
    root, classes, n_shards, *, manifest_out, boxes_out, rejected_out, rejected_log, max_rejected_fraction
) -> pd.DataFrame:
    """Write manifest, an empty boxes table and the refusals (kept in the log when it fails)."""
    manifest, rejections, n_candidates = build_manifest(root, classes, n_shards)
    rejected = qc.to_frame(rejections)
    write_tsv(rejected, rejected_log)
    log.info("%d images kept, %d refused", len(manifest), len(rejected))
    for (split, klass), count in manifest.groupby(["split", "class"]).size().items():
        log.info("%s %s: %d images", split, klass, count)
    check_rejected_fraction(len(rejected), n_candidates, max_rejected_fraction, str(rejected_log))
    missing = [s for s in ("train", "val", "test") if s not in set(manifest.split)]
    if missing:
        raise QCError(f"{root} has no usable images for the split(s) {missing}; read {rejected_log}")
    write_tsv(manifest, manifest_out)
    write_tsv(pd.DataFrame(columns=BOX_COLUMNS), boxes_out)
    write_tsv(rejected, rejected_out)
    return manifest


def convert_shard(manifest_tsv, shard: int, root, out_dir, rejected_out) -> dict[str, int]:
    """The dicom_to_jpg stage for ImageFolder input: <id>.jpg per image of the shard.

    JPEG files are copied byte for byte; PNGs are decoded and written as JPG (images.training_jpg,
    which `pneumoflow predict` shares).
    """
    manifest = read_manifest(manifest_tsv)
    counts, rejections = {"copied": 0, "encoded": 0, "refused": 0}, []
    with atomic_dir(out_dir) as out:
        rows = manifest[manifest["shard"] == shard]
        paths = [Path(root) / source for source in rows.source]
        for row, path in zip(rows.itertuples(index=False), read_ahead(paths), strict=True):
            data = training_jpg(path.read_bytes())
            if data is None:
                rejections.append(Rejection("dicom_to_jpg", str(path), row.patientId, "cannot be decoded"))
                counts["refused"] += 1
                continue
            (out / f"{row.patientId}.jpg").write_bytes(data)
            counts[
                "copied" if data.startswith(JPEG_MAGIC) and path.suffix.lower() != ".png" else "encoded"
            ] += 1
    write_tsv(qc.to_frame(rejections), rejected_out)
    log.info("shard %d: %s", shard, counts)
    return counts


# The reader interface (see sources.readers).


def list_inputs(data_dir: str | Path) -> list[tuple[str, Path]]:
    """(id, path) of every candidate image, for the Snakefile's listing digests."""
    root = Path(data_dir)
    return [(image_id(p.relative_to(root)), p) for p in list_files(root)]


def source_settings(config: dict) -> dict:
    """The config values this source's manifest reads: the class folders' labels."""
    return {"classes": config["data"]["imagefolder_classes"]}


def write_manifest(data_dir: str | Path, settings: dict, *, n_shards: int, **outputs) -> pd.DataFrame:
    """run_manifest on the tree in `data_dir` (outputs as in sources.rsna.write_manifest)."""
    return run_manifest(data_dir, settings["classes"], n_shards, **outputs)


def write_jpgs(manifest_tsv, shard: int, data_dir, out_dir, rejected_out) -> dict[str, int]:
    return convert_shard(manifest_tsv, shard, data_dir, out_dir, rejected_out)
