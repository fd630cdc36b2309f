"""Trained models on new radiographs: `pneumoflow predict IMAGES... --models results/models`.

Images go through the training path (pneumoflow.formats.images, then the arrays stage's resize);
boxes come back in each image's own pixel frame.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pandas as pd

from pneumoflow.core.atomic import atomic_path, write_bytes
from pneumoflow.formats.images import expand_images, read_grayscale, read_source
from pneumoflow.models import baseline, metrics
from pneumoflow.models import postprocessing as postprocess
from pneumoflow.models.catalog import CLASSIFIERS
from pneumoflow.models.postprocessing import PostProcess

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class Models:
    """Loaded models: the U-Net (or None), {classifier: (model, img_size)} and {classifier: its
    operating threshold, chosen on the validation split and saved in model.pt}."""

    unet: object | None = None
    classifiers: dict[str, tuple[dict | torch.nn.Module, int]] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    # the U-Net's post-processing as tuned on val (unet/postprocess.json) and its gate classifier
    postprocess: PostProcess = field(default_factory=PostProcess)
    gate_with: str | None = None

    @classmethod
    def load(cls, models_dir: str | Path) -> Models:
        """Every model found under models_dir/<name>/ (as the pipeline writes them)."""
        folder = Path(models_dir)
        models = cls()
        # PyTorch before TensorFlow: with these wheels the other order crashes the process
        # (SIGSEGV as soon as torch runs a layer).
        for name in CLASSIFIERS:
            if (folder / name / "model.pt").is_file():
                from pneumoflow.models.classifier_inference import load_classifier

                model, saved = load_classifier(name, folder / name / "model.pt")
                models.classifiers[name] = (model, saved["img_size"])
                models.thresholds[name] = saved["threshold"]
        if (folder / "baseline" / "model.json").is_file():  # plain numbers: no torch, no pickle
            model = baseline.load(folder / "baseline" / "model.json")
            models.classifiers["baseline"] = (model, model["img_size"])
            models.thresholds["baseline"] = model["threshold"]
        if (folder / "unet" / "model.keras").is_file():
            from pneumoflow.models.unet_inference import load_unet

            models.unet = load_unet(folder / "unet" / "model.keras")
            tuned = folder / "unet" / "postprocess.json"
            if tuned.is_file():
                models.postprocess = postprocess.load(tuned)
                models.gate_with = json.loads(tuned.read_text()).get("gate_with")
            if models.postprocess.gate is not None and models.gate_with not in models.classifiers:
                log.warning(
                    "%s gates boxes on %s, which is not in %s: boxes are not gated",
                    tuned, models.gate_with, folder,
                )  # fmt: skip
                models.postprocess = dataclasses.replace(models.postprocess, gate=None)
        if models.unet is None and not models.classifiers:
            raise ValueError(
                f"no trained model in {folder}: expected unet/model.keras or <vgg16|resnet101>/model.pt "
                "(run the pipeline first, or point --models at its results/models)"
            )
        return models

    def names(self) -> list[str]:
        return (["unet"] if self.unet is not None else []) + list(self.classifiers)


def image_names(paths: Sequence[Path]) -> list[str]:
    """Each file's shortest trailing part of its path that no other file's path ends in: the
    file name where that is unique (x.dcm and x.png), else with its folders (a/scan.dcm and
    b/scan.dcm). Unique per file, and the same on every call with the same files."""
    parts = [p.resolve().parts for p in paths]
    if len(set(parts)) < len(parts):
        twice = next(str(p) for p, q in zip(paths, parts, strict=True) if parts.count(q) > 1)
        raise ValueError(f"{twice} is given twice (directly or inside a folder); give each image once")
    names: dict[int, str] = {}
    for k in range(1, max(map(len, parts)) + 1):
        tails = Counter(q[-k:] for q in parts)
        for i, q in enumerate(parts):
            if i not in names and (tails[q[-k:]] == 1 or len(q) == k):
                names[i] = "/".join(q[-k:]).lstrip("/")  # never absolute: it names a file in out dirs
    return [names[i] for i in range(len(parts))]


def predict_images(
    paths: Sequence[str | Path], models: Models, batch_size: int = 32
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One row per image: path, image (image_names: unique), patientId (file stem), rows, cols,
    <classifier>_probability and <classifier>_pneumonia (at its saved threshold), and with a U-Net
    unet_probability (max of its map) and PredictionString ("conf x y w h ..." in the image's own
    pixels, post-processed as tuned on val). Also {image: (rows, cols) float32 opacity map}.
    """
    parts, maps = [], {}
    files = [Path(p) for p in paths]
    names = image_names(files)
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        sources = [read_source(p) for p in batch]
        table: dict[str, Any] = {
            "path": [str(p) for p in batch],
            "image": names[start : start + batch_size],
            "patientId": [p.stem for p in batch],
            "rows": [s.shape[0] for s in sources],
            "cols": [s.shape[1] for s in sources],
        }
        for name, (model, size) in models.classifiers.items():
            resized = np.stack([s.resized(size) for s in sources])
            if name == "baseline":
                probs = baseline.probabilities(model, resized)
            else:
                from pneumoflow.models.classifier_inference import classifier_probs

                probs = classifier_probs(model, resized)
            table[f"{name}_probability"] = probs
            table[f"{name}_pneumonia"] = (probs >= models.thresholds[name]).astype(int)
        if models.unet is not None:
            from pneumoflow.models.unet_inference import predict_sources

            gate = table.get(f"{models.gate_with}_probability")
            probs, boxes = predict_sources(models.unet, sources, models.postprocess, gate)
            table["unet_probability"] = probs.reshape(len(probs), -1).max(axis=1)
            table["PredictionString"] = [metrics.format_prediction_string(b) for b in boxes]
            for name, p, source in zip(table["image"], probs, sources, strict=True):
                rows, cols = source.shape
                maps[name] = cv2.resize(p, (cols, rows), interpolation=cv2.INTER_LINEAR)
        parts.append(pd.DataFrame(table))
    return pd.concat(parts, ignore_index=True), maps


def write_overlay(path: str | Path, image_path: str | Path, row: pd.Series, prob_map, threshold: float):
    """PNG of the image with the U-Net's outline and boxes, and each classifier's probability."""
    image = cv2.cvtColor(read_grayscale(image_path), cv2.COLOR_GRAY2BGR)
    thickness = max(2, image.shape[0] // 300)
    if prob_map is not None:
        contours, _ = cv2.findContours(
            (prob_map > threshold).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(image, contours, -1, (0, 200, 255), thickness)
    for conf, x, y, w, h in metrics.parse_prediction_string(row.get("PredictionString", "") or ""):
        cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), (0, 0, 255), thickness)
        cv2.putText(image, f"{conf:.2f}", (int(x), max(int(y) - 5, 15)), 0, thickness / 3, (0, 0, 255), 2)
    columns = [c for c in row.index if c.endswith("_probability")]
    for i, text in enumerate(f"{c.removesuffix('_probability')}: {row[c]:.2f}" for c in columns):
        cv2.putText(image, text, (10, 30 + 30 * i), 0, thickness / 3, (0, 255, 0), 2)
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"OpenCV could not encode the overlay of {image_path}")
    write_bytes(path, png.tobytes())


def run_predict(
    images: Sequence[str | Path],
    models_dir: str | Path,
    out_csv: str | Path,
    overlay_dir: str | Path | None = None,
) -> pd.DataFrame:
    """The `pneumoflow predict` command: predictions.csv (+ one overlay PNG per image, at
    overlay_dir/<image>.png, e.g. x.dcm.png and x.png.png, a/scan.dcm.png and b/scan.dcm.png)."""
    paths = expand_images(images)
    with tempfile.TemporaryDirectory() as tmp:
        if str(models_dir).startswith("models:/"):  # a registered model: fetch its one file
            from pneumoflow.tracking.model_files import download_registered
            from pneumoflow.tracking.settings import TrackingSettings

            models_dir = download_registered(str(models_dir), tmp, TrackingSettings().uri)
        models = Models.load(models_dir)
    table, maps = predict_images(paths, models)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    if overlay_dir is not None:
        for _, row in table.iterrows():
            overlay = Path(overlay_dir) / f"{row.image}.png"
            overlay.parent.mkdir(parents=True, exist_ok=True)
            write_overlay(overlay, row.path, row, maps.get(row.image), models.postprocess.threshold)
    log.info("predicted %d images with %s", len(table), ", ".join(models.names()))
    return table
