"""U-Net probability maps -> scored boxes, with post-processing tuned on the validation split.

A PostProcess setting thresholds the map, drops small components, shrinks each box
about its centre (the RSNA first-place team used 0.875: masks drawn from boxes come
out larger than the opacity) and can gate an image's boxes on a classifier's
pneumonia probability. tune() picks the setting with the best RSNA score by grid
search. It takes only the arrays it is given: pass the validation split, never the
test split, so that the test score stays an unbiased estimate.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pneumoflow.models.metrics import Box, ScoredBox, boxes_from_mask, image_score

DEFAULT_GRID: dict[str, tuple] = {
    "threshold": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    "min_area": (0.0, 0.002, 0.005, 0.01, 0.02),
    "shrink": (1.0, 0.95, 0.9, 0.875, 0.85),
    "gate": (None, 0.1, 0.2, 0.3, 0.5),  # tried only when classifier probabilities are given
}


@dataclass(frozen=True)
class PostProcess:
    """How to turn a probability map into boxes.

    threshold: a pixel is opacity where prob > threshold.
    min_area: components whose box covers less than this fraction of the map are dropped.
    shrink: each box's width and height are scaled by this about the box's centre.
    gate: an image whose classifier probability is below this gets no boxes; None: no gate.
    """

    threshold: float = 0.5
    min_area: float = 0.0
    shrink: float = 1.0
    gate: float | None = None

    def __post_init__(self) -> None:
        checks = {
            "threshold": 0 <= self.threshold < 1,
            "min_area": 0 <= self.min_area < 1,
            "shrink": 0 < self.shrink <= 1,
            "gate": self.gate is None or 0 <= self.gate <= 1,
        }
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                "PostProcess expects 0 <= threshold < 1, 0 <= min_area < 1, 0 < shrink <= 1, "
                f"gate None or in [0, 1]; got {', '.join(bad)}"
            )

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, float | None]) -> PostProcess:
        """Inverse of to_dict; unknown keys fail (a misspelled key must not be ignored)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown PostProcess keys {unknown}; valid keys: {sorted(names)}")
        values = {k: (None if v is None else float(v)) for k, v in data.items()}
        return cls(**values)  # type: ignore[arg-type]  # a None where a float belongs fails __post_init__


def _components(prob: np.ndarray, threshold: float) -> np.ndarray:
    """(K, 5) float64 rows (conf, x, y, w, h) in the map's pixels, most confident first."""
    return np.array(boxes_from_mask(prob, threshold), np.float64).reshape(-1, 5)


def _finish(
    comps: np.ndarray,
    map_shape: tuple[int, int],
    rows: int,
    cols: int,
    pp: PostProcess,
    classifier_prob: float | None,
) -> np.ndarray:
    """Components (K, 5) -> kept, shrunk boxes (K', 5) in the rows x cols frame."""
    if pp.gate is not None and classifier_prob is not None and classifier_prob < pp.gate:
        return comps[:0]
    size_y, size_x = map_shape
    out = comps[comps[:, 3] * comps[:, 4] >= pp.min_area * size_y * size_x].copy()
    out[:, 1] += out[:, 3] * (1 - pp.shrink) / 2
    out[:, 2] += out[:, 4] * (1 - pp.shrink) / 2
    out[:, 3:5] *= pp.shrink
    out[:, [1, 3]] *= cols / size_x
    out[:, [2, 4]] *= rows / size_y
    if classifier_prob is not None:
        out[:, 0] *= classifier_prob
    return out


def boxes(
    prob: np.ndarray, rows: int, cols: int, pp: PostProcess, classifier_prob: float | None = None
) -> list[ScoredBox]:
    """Scored boxes (conf, x, y, w, h) of one map, in the pixels of the rows x cols original image.

    prob: (S, S) float32 in [0, 1] (any (H, W) works). Confidence: the component's mean
    probability, times classifier_prob when one is given. Most confident first; [] when
    the gate drops the image or nothing is above the threshold.
    """
    kept = _finish(_components(prob, pp.threshold), prob.shape, rows, cols, pp, classifier_prob)
    return [(float(c), float(x), float(y), float(w), float(h)) for c, x, y, w, h in kept]


def _grid(grid: Mapping[str, Sequence] | None, gated: bool) -> dict[str, tuple]:
    grid = dict(grid or {})
    unknown = sorted(set(grid) - set(DEFAULT_GRID))
    if unknown:
        raise ValueError(f"unknown grid keys {unknown}; valid keys: {sorted(DEFAULT_GRID)}")
    full = {k: tuple(grid.get(k, v)) for k, v in DEFAULT_GRID.items()}
    if not gated:
        full["gate"] = (None,)
    return full


def _image_scores(kept: Sequence[np.ndarray], truth_lists: Sequence[Sequence[Box]]) -> np.ndarray:
    """(N,) RSNA score per image, NaN where the image has neither truths nor boxes."""
    scores = np.full(len(kept), np.nan)
    for i, (k, t) in enumerate(zip(kept, truth_lists, strict=True)):
        if t:
            scores[i] = image_score([tuple(b) for b in k], t)
        elif len(k):
            scores[i] = 0.0  # a box on an image without opacity: the shortcut image_score takes too
    return scores


def _simplicity(pp: PostProcess) -> tuple:
    """Sort key: smaller is simpler (no gate, shrink 1, min_area 0, threshold nearest 0.5)."""
    return (
        pp.gate is not None,
        pp.gate or 0.0,
        1 - pp.shrink,
        pp.min_area,
        abs(pp.threshold - 0.5),
        pp.threshold,
    )


def tune(
    probs: np.ndarray,
    frames: Sequence[tuple[int, int]],
    truths: Mapping[str, Sequence[Box]],
    patient_ids: Sequence[str],
    classifier_probs: np.ndarray | None = None,
    grid: Mapping[str, Sequence] | None = None,
) -> tuple[PostProcess, pd.DataFrame]:
    """Grid search of PostProcess settings for the best RSNA score on the validation split.

    probs: (N, S, S) float32 validation maps; frames: N (rows, cols) original sizes;
    truths: {patientId: [(x, y, w, h), ...]} with [] for negatives, for every id in
    patient_ids (N,); classifier_probs: (N,) float or None (then no gate is tried).
    grid: {"threshold", "min_area", "shrink", "gate": values}, missing keys from DEFAULT_GRID.
    Returns the best setting (ties go to the simplest) and the sweep, one row per
    candidate: threshold, min_area, shrink, gate (NaN: none), rsna_score, n_boxes (kept
    boxes over all images). Ties are broken toward no gate (then the lowest gate),
    shrink 1, min_area 0, and the threshold nearest 0.5, in that order.
    """
    n = len(probs)
    if not (len(frames) == len(patient_ids) == n) or (
        classifier_probs is not None and len(classifier_probs) != n
    ):
        raise ValueError(
            f"tune needs one frame, patient id (and classifier probability) per map; got {n} maps, "
            f"{len(frames)} frames, {len(patient_ids)} ids"
            + ("" if classifier_probs is None else f", {len(classifier_probs)} classifier probabilities")
        )
    missing = [pid for pid in patient_ids if pid not in truths]
    if missing:
        raise ValueError(
            f"{len(missing)} patient ids have no truth entry (e.g. {missing[0]}); negatives need []"
        )
    if n == 0:
        raise ValueError("tune got no validation images")
    grid = _grid(grid, classifier_probs is not None)
    cls = np.ones(n) if classifier_probs is None else np.asarray(classifier_probs, np.float64)
    truth_lists = [list(truths[pid]) for pid in patient_ids]
    has_truth = np.array([bool(t) for t in truth_lists])
    rows: list[dict[str, Any]] = []
    for threshold in grid["threshold"]:
        comps = [_components(p, threshold) for p in probs]  # the only labelling pass
        for min_area, shrink in itertools.product(grid["min_area"], grid["shrink"]):
            ungated = PostProcess(threshold, min_area, shrink)
            kept = [
                _finish(c, p.shape, rows_, cols_, ungated, None)
                for c, p, (rows_, cols_) in zip(comps, probs, frames, strict=True)
            ]
            n_kept = np.array([len(b) for b in kept])
            # The RSNA score of an image depends on the order of its boxes only, and the
            # classifier factor (one number >= 0 per image, under a stable sort) keeps that
            # order: the gate either keeps the ungated score or empties the image.
            score = _image_scores(kept, truth_lists)
            for gate in grid["gate"]:
                dropped = cls < gate if gate is not None else np.zeros(n, bool)
                gated = np.where(dropped, np.where(has_truth, 0.0, np.nan), score)
                pp = PostProcess(threshold, min_area, shrink, gate)
                rsna = float(np.nanmean(gated)) if np.isfinite(gated).any() else float("nan")
                rows.append({**pp.to_dict(), "rsna_score": rsna, "n_boxes": int(n_kept[~dropped].sum())})
    sweep = pd.DataFrame(rows).astype({"gate": float})  # NaN: no gate
    candidates = [PostProcess.from_dict({k: r[k] for k in DEFAULT_GRID}) for r in rows]
    # rounded so that float noise between equal scores cannot outrank simplicity
    best = min(
        range(len(rows)),
        key=lambda i: (
            -round(np.nan_to_num(rows[i]["rsna_score"], nan=-1.0), 12),
            _simplicity(candidates[i]),
        ),
    )
    return candidates[best], sweep


def load(path: str | Path) -> PostProcess:
    """The setting the postprocess stage wrote (postprocess.json; its extra keys are notes)."""
    import json

    data = json.loads(Path(path).read_text())
    return PostProcess.from_dict({f.name: data[f.name] for f in fields(PostProcess)})


def gate_probabilities(predictions_csv: str | Path | None, patient_ids: Sequence[str]) -> np.ndarray | None:
    """(N,) float64 pneumonia probabilities of a classifier's predictions CSV (patientId,
    probability), in the order of `patient_ids`; None without a CSV (no gating)."""
    if predictions_csv is None:
        return None
    table = pd.read_csv(predictions_csv, dtype={"patientId": str}).set_index("patientId")
    missing = [pid for pid in patient_ids if pid not in table.index]
    if missing:
        raise ValueError(f"{predictions_csv} has no probability for {len(missing)} images, e.g. {missing[0]}")
    return table.loc[list(patient_ids), "probability"].to_numpy(np.float64)
