"""Post-processing of U-Net maps into boxes, and its tuning, against hand-worked cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pneumoflow.models import metrics
from pneumoflow.models.postprocessing import DEFAULT_GRID, PostProcess, boxes, tune


def _map(size: int, *blobs: tuple[int, int, int, int, float]) -> np.ndarray:
    """(size, size) float32 map with rectangles (x, y, w, h, prob) painted in."""
    prob = np.zeros((size, size), np.float32)
    for x, y, w, h, p in blobs:
        prob[y : y + h, x : x + w] = p
    return prob


def test_min_area_drops_a_tiny_component_and_keeps_a_big_one():
    # (64, 64): a 10x10 blob (100 px) and a 2x2 one (4 px); 0.005 of the map is 20.48 px
    prob = _map(64, (5, 5, 10, 10, 0.9), (40, 40, 2, 2, 0.7))
    assert len(boxes(prob, 64, 64, PostProcess())) == 2
    assert boxes(prob, 64, 64, PostProcess(min_area=0.005)) == [(pytest.approx(0.9), 5.0, 5.0, 10.0, 10.0)]


@pytest.mark.parametrize("area_px, kept", [(20, 1), (21, 0)])
def test_min_area_keeps_a_box_of_exactly_the_minimum(area_px, kept):
    prob = _map(64, (0, 0, 4, 5, 0.9))  # a 4x5 box: 20 px
    assert len(boxes(prob, 64, 64, PostProcess(min_area=area_px / 64**2))) == kept


def test_min_area_is_measured_on_the_box_not_the_pixels():
    # (64, 64): a diagonal line of 8 px spans an 8x8 box (64 px)
    prob = np.zeros((64, 64), np.float32)
    prob[np.arange(8), np.arange(8)] = 0.9
    assert len(boxes(prob, 64, 64, PostProcess(min_area=60 / 64**2))) == 1


def test_shrink_scales_about_the_centre_and_frame_scaling_follows():
    # (64, 64): box x=8, y=16, w=16, h=32; 0.875 -> w 14, h 28, centre kept at (16, 32)
    prob = _map(64, (8, 16, 16, 32, 0.8))
    assert boxes(prob, 64, 64, PostProcess(shrink=0.875)) == [(pytest.approx(0.8), 9.0, 18.0, 14.0, 28.0)]
    # 64 -> 1024: every coordinate x16
    assert boxes(prob, 1024, 1024, PostProcess(shrink=0.875)) == [
        (pytest.approx(0.8), 144.0, 288.0, 224.0, 448.0)
    ]
    # rows 512, cols 1024: x and w x16, y and h x8
    assert boxes(prob, 512, 1024, PostProcess()) == [(pytest.approx(0.8), 128.0, 128.0, 256.0, 256.0)]


@pytest.mark.parametrize(
    "gate, classifier_prob, expected_conf",
    [
        (0.5, 0.4, None),  # under the gate: no boxes
        (0.5, 0.5, 0.4),  # at the gate: kept, confidence 0.8 x 0.5
        (0.5, 0.6, 0.48),
        (0.5, None, 0.8),  # no classifier probability: nothing to gate on or multiply by
        (None, 0.4, 0.32),  # no gate: the probability still weighs the confidence
    ],
)
def test_gate_drops_or_weighs_the_boxes(gate, classifier_prob, expected_conf):
    prob = _map(32, (4, 4, 8, 8, 0.8))
    found = boxes(prob, 32, 32, PostProcess(gate=gate), classifier_prob)
    if expected_conf is None:
        assert found == []
    else:
        assert found == [(pytest.approx(expected_conf), 4.0, 4.0, 8.0, 8.0)]


def test_settings_round_trip_through_json_and_bad_ones_fail():
    pp = PostProcess(threshold=0.6, min_area=0.005, shrink=0.875, gate=0.2)
    assert PostProcess.from_dict(json.loads(json.dumps(pp.to_dict()))) == pp
    assert PostProcess.from_dict(json.loads(json.dumps(PostProcess().to_dict()))) == PostProcess()
    with pytest.raises(ValueError, match="unknown PostProcess keys \\['treshold'\\]"):
        PostProcess.from_dict({"treshold": 0.5})
    with pytest.raises(ValueError, match="shrink=1.5"):
        PostProcess(shrink=1.5)
    with pytest.raises(ValueError, match="threshold=1"):
        PostProcess(threshold=1)


def _case(classifier: bool):
    """Six (32, 32) maps in a 256x256 frame (x8): three positives whose blob matches the
    truth, each with a 2x2 false-positive speck; three negatives, with a large
    false-positive blob only in the gated case (where the classifier rules them out).
    Specks and blobs are as confident as the truths' blobs: no threshold removes them."""
    probs, truths, ids = [], {}, []
    for i in range(6):
        pid = f"p{i}"
        if i < 3:
            probs.append(_map(32, (4, 4, 10, 12, 0.9), (26, 26, 2, 2, 0.95)))
            truths[pid] = [(32.0, 32.0, 80.0, 96.0)]
        else:
            probs.append(_map(32, (8, 8, 10, 10, 0.9)) if classifier else _map(32))
            truths[pid] = []
        ids.append(pid)
    cls = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.15]) if classifier else None
    return np.stack(probs), [(256, 256)] * 6, truths, ids, cls


def _slow_score(pp, probs, frames, truths, ids, cls):
    """The RSNA score of a setting through the public boxes(), one image at a time."""
    preds = {
        pid: boxes(p, r, c, pp, None if cls is None else float(cls[i]))
        for i, (pid, p, (r, c)) in enumerate(zip(ids, probs, frames, strict=True))
    }
    return metrics.rsna_score(preds, {pid: truths[pid] for pid in ids})


def test_tune_removes_small_false_positives_with_min_area():
    probs, frames, truths, ids, _ = _case(classifier=False)
    best, sweep = tune(probs, frames, truths, ids)
    assert len(sweep) == 6 * 5 * 5 and sweep["gate"].isna().all()
    assert list(sweep.columns) == ["threshold", "min_area", "shrink", "gate", "rsna_score", "n_boxes"]
    default = sweep.query("threshold == 0.5 and min_area == 0 and shrink == 1.0")["rsna_score"].item()
    assert default == pytest.approx(0.5)  # one hit, one false positive per positive image
    assert best.min_area > 0 and best.gate is None
    assert _slow_score(best, probs, frames, truths, ids, None) == pytest.approx(1.0)
    # the simplest of the perfect settings: specks are 4/1024 of the map, so min_area 0.005 suffices
    assert best == PostProcess(threshold=0.5, min_area=0.005, shrink=1.0)


def test_tune_gates_negatives_on_the_classifier():
    probs, frames, truths, ids, cls = _case(classifier=True)
    best, sweep = tune(probs, frames, truths, ids, cls)
    assert len(sweep) == 6 * 5 * 5 * len(DEFAULT_GRID["gate"])
    # the negatives' blobs are as large as the true ones: only the gate (0.2 < g <= 0.7) removes them
    assert best.gate == 0.3 and best.min_area == 0.005
    assert sweep["rsna_score"].max() == pytest.approx(1.0)


@pytest.mark.parametrize("classifier", [False, True])
def test_tune_sweep_agrees_with_scoring_each_setting_through_boxes(classifier):
    probs, frames, truths, ids, cls = _case(classifier)
    # gate 0.75 also empties a positive image (classifier 0.7): it must count 0, not drop out
    grid = {
        "threshold": (0.5, 0.75),
        "min_area": (0.0, 0.005),
        "shrink": (1.0, 0.875),
        "gate": (None, 0.3, 0.75),
    }
    _, sweep = tune(probs, frames, truths, ids, cls, grid=grid)
    assert len(sweep) == 2 * 2 * 2 * (3 if classifier else 1)
    for row in sweep.itertuples(index=False):
        pp = PostProcess(row.threshold, row.min_area, row.shrink, None if np.isnan(row.gate) else row.gate)
        assert row.rsna_score == pytest.approx(_slow_score(pp, probs, frames, truths, ids, cls))


def test_tune_ties_go_to_the_simplest_setting():
    # one (32, 32) map whose blob is the truth: every threshold, min_area and
    # shrink >= 0.875 (IoU 0.77 > 0.75) scores 1
    probs = _map(32, (4, 4, 16, 16, 0.9))[None]
    truths = {"a": [(4.0, 4.0, 16.0, 16.0)]}
    best, sweep = tune(probs, [(32, 32)], truths, ["a"])
    assert (sweep["rsna_score"] == 1.0).sum() > 1
    assert best == PostProcess()
    best, _ = tune(probs, [(32, 32)], truths, ["a"], grid={"threshold": (0.3, 0.6, 0.8)})
    assert best == PostProcess(threshold=0.6)


def test_tune_ties_prefer_an_unshrunk_box_to_no_minimum_area():
    # (32, 32) x2, frame 32. A: blob on its truth plus a 2x2 speck (min_area 0.005 removes
    # it); B: a 16x16 blob about an 8x8 truth (IoU 0.25) that shrink 0.5 makes exact, while
    # it shrinks A's blob off its truth. (1, 0.005), (0.5, 0) and (0.5, 0.005) all score 1/2.
    probs = np.stack([_map(32, (0, 0, 16, 16, 0.9), (28, 28, 2, 2, 0.95)), _map(32, (8, 8, 16, 16, 0.9))])
    truths = {"a": [(0.0, 0.0, 16.0, 16.0)], "b": [(12.0, 12.0, 8.0, 8.0)]}
    grid = {"threshold": (0.5,), "min_area": (0.0, 0.005), "shrink": (1.0, 0.5)}
    best, sweep = tune(probs, [(32, 32)] * 2, truths, ["a", "b"], grid=grid)
    assert sorted(sweep["rsna_score"]) == pytest.approx([0.25, 0.5, 0.5, 0.5])
    assert best == PostProcess(min_area=0.005)


def test_tune_refuses_mismatched_inputs():
    probs, frames, truths, ids, _ = _case(classifier=False)
    with pytest.raises(ValueError, match="6 maps, 5 frames"):
        tune(probs, frames[:5], truths, ids)
    with pytest.raises(ValueError, match="no truth entry"):
        tune(probs, frames, {k: v for k, v in truths.items() if k != "p4"}, ids)
    with pytest.raises(ValueError, match="unknown grid keys \\['thresholds'\\]"):
        tune(probs, frames, truths, ids, grid={"thresholds": (0.5,)})
