"""Metrics against hand-worked cases and a straightforward reimplementation."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoflow.models.metrics import (
    box_iou,
    boxes_from_mask,
    classification,
    format_prediction_string,
    image_score,
    overlap,
    overlap_from_counts,
    parse_prediction_string,
    pixel_counts,
    rsna_score,
    threshold_scores,
    two_class_mean_iou,
)


def test_perfect_prediction_scores_one():
    assert image_score([(0.9, 10, 10, 20, 20)], [(10, 10, 20, 20)]) == 1.0


def test_empty_image_with_no_prediction_is_left_out():
    assert image_score([], []) is None
    # so the mean is over the other image only
    assert rsna_score({"a": [(0.9, 0, 0, 10, 10)]}, {"a": [(0, 0, 10, 10)], "b": []}) == 1.0


def test_one_false_positive_on_an_empty_image_scores_zero():
    assert image_score([(0.1, 0, 0, 5, 5)], []) == 0.0
    assert (
        rsna_score({"a": [(0.9, 0, 0, 10, 10)], "b": [(0.2, 1, 1, 2, 2)]}, {"a": [(0, 0, 10, 10)], "b": []})
        == 0.5
    )


def test_missed_truth_scores_zero():
    assert image_score([], [(0, 0, 10, 10)]) == 0.0


@pytest.mark.parametrize(
    "pred_w, iou, hits",
    [
        # truth (0, 0, 100, 10); prediction (0, 0, w, 10) has IoU w / 100
        (50, 0.50, 2),  # > 0.40, > 0.45; not > 0.50 (strict)
        (51, 0.51, 3),  # > 0.40, 0.45, 0.50
        (75, 0.75, 7),  # not > 0.75
        (76, 0.76, 8),  # hits at every threshold
        (40, 0.40, 0),  # not > 0.40
    ],
)
def test_threshold_edges_are_strict(pred_w, iou, hits):
    assert box_iou((0, 0, pred_w, 10), (0, 0, 100, 10)) == pytest.approx(iou)
    assert image_score([(0.9, 0, 0, pred_w, 10)], [(0, 0, 100, 10)]) == pytest.approx(hits / 8)


def test_confidence_order_decides_the_match():
    truth = [(0, 0, 100, 10)]
    good, poor = (0, 0, 100, 10), (0, 0, 60, 10)  # IoU 1.0 and 0.6
    # the confident good box takes the truth; the poor one is a FP at every threshold: 1/2
    assert image_score([(0.9, *good), (0.1, *poor)], truth) == pytest.approx(0.5)
    # the confident poor box takes the truth where 0.6 > t (t = 0.40..0.55) and the good box
    # is a FP there; above that the good box matches. TP=1, FP=1 at every threshold: 1/2
    assert image_score([(0.9, *poor), (0.1, *good)], truth) == pytest.approx(0.5)
    # two truths, the confident box overlaps both: it takes its best, the other box the rest
    truths = [(0, 0, 10, 10), (20, 0, 10, 10)]
    assert image_score([(0.9, 0, 0, 10, 10), (0.8, 20, 0, 10, 10)], truths) == 1.0


def _reference_image_score(preds, truths):
    """A plain reimplementation, written from the competition's description."""
    if not truths and not preds:
        return None
    if not truths or not preds:
        return 0.0
    preds = sorted(preds, key=lambda p: p[0], reverse=True)
    total = 0.0
    for t in [0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75]:
        used, tp = set(), 0
        for p in preds:
            best, best_iou = None, t
            for j, g in enumerate(truths):
                if j in used:
                    continue
                x0, y0 = max(p[1], g[0]), max(p[2], g[1])
                x1, y1 = min(p[1] + p[3], g[0] + g[2]), min(p[2] + p[4], g[1] + g[3])
                inter = max(0, x1 - x0) * max(0, y1 - y0)
                iou = inter / (p[3] * p[4] + g[2] * g[3] - inter)
                if iou > best_iou:
                    best, best_iou = j, iou
            if best is not None:
                used.add(best)
                tp += 1
        total += tp / (len(preds) + len(truths) - tp)
    return total / 8


def test_matches_reference_on_random_boxes():
    rng = np.random.default_rng(0)
    for _ in range(300):
        truths = [
            tuple(rng.integers([0, 0, 5, 5], [80, 80, 40, 40]).astype(float))
            for _ in range(rng.integers(0, 4))
        ]
        preds = []
        for _ in range(rng.integers(0, 5)):
            if truths and rng.random() < 0.7:  # a jittered truth, so that hits happen
                x, y, w, h = truths[rng.integers(len(truths))]
                preds.append((rng.random(), x + rng.normal(0, 3), y + rng.normal(0, 3), w, h))
            else:
                preds.append((rng.random(), *rng.integers([0, 0, 5, 5], [80, 80, 40, 40]).astype(float)))
        expected = _reference_image_score(preds, truths)
        assert image_score(preds, truths) == (
            None if expected is None else pytest.approx(expected, abs=1e-12)
        )


# --- our matching rule against the public Kaggle kernel's -------------------------------------

THRESHOLDS = [0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75]


def _kernel_threshold_scores(preds, truths):
    """The rule of the widely used public kernel (Yicheng Chen, "Mean Average Precision Metric"),
    written here from its description, not copied: at each threshold the truths, in the order
    given, each take the most confident prediction not yet taken whose IoU is >= t; FP are the
    predictions left over."""
    preds = sorted(preds, key=lambda p: p[0], reverse=True)
    scores = []
    for t in THRESHOLDS:
        taken = set()
        for truth in truths:
            hit = next(
                (j for j, p in enumerate(preds) if j not in taken and box_iou(p[1:], truth) >= t), None
            )
            if hit is not None:
                taken.add(hit)
        tp = len(taken)
        scores.append(tp / (tp + (len(preds) - tp) + (len(truths) - tp)))
    return np.array(scores)


# the case: two truths; the confident prediction overlaps both
TRUTHS = [(28, 47, 17, 30), (29, 53, 10, 30)]
PREDS = [(0.58, 21, 54, 17, 30), (0.8, 29, 50, 10, 30)]


def test_the_two_rules_part_on_a_prediction_that_overlaps_two_truths():
    """IoUs, worked by hand (areas 510, 300, 510, 300):
    P0.8 vs T1: 10 x 27 = 270 / (300 + 510 - 270) = 0.500;  vs T2: 270 / 330 = 0.818
    P0.58 vs T1: 10 x 23 = 230 / 790 = 0.291;                 vs T2: 9 x 29 = 261 / 549 = 0.475
    Ours: P0.8 goes first and takes its best truth, T2 (0.818 > t everywhere); P0.58 is left
    with T1 at 0.291 < 0.40: TP 1, FP 1, FN 1 = 1/3 at every threshold, mean 1/3.
    The kernel: T1 goes first and takes P0.8 (0.500 >= t for t <= 0.50); T2 is left with P0.58
    (0.475 >= t for t <= 0.45): 2/2 at 0.40 and 0.45; from 0.50 on 1/3 -> mean (2 + 6/3) / 8 = 0.5.
    At 0.50 the two pair different boxes but count alike."""
    ious = [[box_iou(p[1:], t) for t in TRUTHS] for p in PREDS]
    np.testing.assert_allclose(ious, [[230 / 790, 261 / 549], [270 / 540, 270 / 330]])
    np.testing.assert_allclose(threshold_scores(PREDS, TRUTHS), [1 / 3] * 8)
    np.testing.assert_allclose(_kernel_threshold_scores(PREDS, TRUTHS), [1, 1] + [1 / 3] * 6)
    assert image_score(PREDS, TRUTHS) == pytest.approx(1 / 3)
    # the kernel depends on the order the truths are listed in; ours does not
    np.testing.assert_allclose(_kernel_threshold_scores(PREDS, TRUTHS[::-1]), [1 / 3] * 8)
    assert image_score(PREDS, TRUTHS[::-1]) == pytest.approx(1 / 3)


def test_the_two_rules_part_on_an_iou_equal_to_a_threshold():
    """IoU exactly 0.5 (50 x 10 inside 100 x 10): a hit needs IoU > t in the competition's text
    ("greater than 0.5"), >= t in the kernel: 2 hits of 8 against 3 of 8."""
    preds, truths = [(0.9, 0, 0, 50, 10)], [(0, 0, 100, 10)]
    assert box_iou(preds[0][1:], truths[0]) == 0.5
    np.testing.assert_allclose(threshold_scores(preds, truths), [1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(_kernel_threshold_scores(preds, truths), [1, 1, 1, 0, 0, 0, 0, 0])


def _contended(preds, truths) -> bool:
    """True when some prediction reaches IoU >= 0.40 with two truths, or some truth with two
    predictions: only then can the order of matching change which pairs form."""
    near = np.array([[box_iou(p[1:], t) >= 0.40 for t in truths] for p in preds])
    return bool((near.sum(axis=0) > 1).any() or (near.sum(axis=1) > 1).any())


def test_the_rules_agree_exactly_where_no_box_is_contended():
    """On random images (float boxes, so no IoU lands exactly on a threshold) the two rules give
    the same score wherever no box has two candidates; every disagreement is a contended image."""
    rng = np.random.default_rng(1)
    disagreements, contended = 0, 0
    for _ in range(2000):
        truths = [tuple(rng.uniform([0, 0, 10, 10], [60, 60, 40, 40])) for _ in range(rng.integers(1, 4))]
        preds = []
        for _ in range(rng.integers(1, 5)):
            x, y, w, h = truths[rng.integers(len(truths))]
            preds.append((rng.random(), x + rng.normal(0, 6), y + rng.normal(0, 6), w, h))
        ours, kernel = threshold_scores(preds, truths), _kernel_threshold_scores(preds, truths)
        if _contended(preds, truths):
            contended += 1
            disagreements += not np.allclose(ours, kernel)
        else:
            np.testing.assert_allclose(ours, kernel, err_msg=f"{preds} {truths}")
    assert contended > 100 and disagreements > 0  # the test can fail: the rules do part


def test_overlap_edge_cases():
    # (2, 2, 2): image 0 has truth [[1,1],[0,0]], prediction [[1,0],[0,0]]; image 1 empty/empty
    true = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]]], bool)
    pred = np.array([[[1, 0], [0, 0]], [[0, 0], [0, 0]]], bool)
    m = overlap(pred, true)
    assert m["dice"] == pytest.approx(2 / 3) and m["iou"] == pytest.approx(1 / 2)
    assert m["mean_dice_positive"] == pytest.approx(2 / 3) and m["empty_rate_negative"] == 1.0
    # background: predicted 7 px, true 6 px, 6 shared -> 6/7; opacity 1/2
    assert m["mean_iou_2class"] == pytest.approx((6 / 7 + 1 / 2) / 2)
    empty = np.zeros((1, 3, 3), bool)
    assert overlap(empty, empty)["dice"] == 1.0 and overlap(empty, empty)["iou"] == 1.0
    assert overlap(~empty, empty)["dice"] == 0.0 and overlap(~empty, empty)["empty_rate_negative"] == 0.0


def test_overlap_of_shards_equals_overlap_of_the_whole():
    rng = np.random.default_rng(4)
    # (10, 12, 12): sparse opacities, some images empty in truth or prediction
    true = (rng.random((10, 12, 12)) < 0.08) & (rng.random((10, 1, 1)) < 0.6)
    pred = (true ^ (rng.random((10, 12, 12)) < 0.05)) & (rng.random((10, 1, 1)) < 0.8)
    parts = [pixel_counts(pred[a:b], true[a:b]) for a, b in ((0, 3), (3, 4), (4, 10))]
    joined = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    assert overlap_from_counts(joined) == pytest.approx(overlap(pred, true))
    assert overlap(pred, true)["mean_iou_2class"] == pytest.approx(two_class_mean_iou(pred, true))


@pytest.mark.parametrize(
    "pred, true, expected",
    [
        # (1, 2, 2): opacity 1 shared of 2 -> 1/2; background 2 shared of 3 -> 2/3
        ([[[1, 0], [0, 0]]], [[[1, 1], [0, 0]]], (1 / 2 + 2 / 3) / 2),
        # (1, 2, 2): both empty: only background is present, and it matches
        ([[[0, 0], [0, 0]]], [[[0, 0], [0, 0]]], 1.0),
        # (1, 2, 2): all opacity predicted on an empty truth: both classes 0
        ([[[1, 1], [1, 1]]], [[[0, 0], [0, 0]]], 0.0),
        # (2, 1, 3): pooled over images: opacity 1 shared of 3 -> 1/3; background 3 shared of 5 -> 3/5
        ([[[1, 1, 0]], [[0, 0, 0]]], [[[0, 1, 0]], [[0, 0, 1]]], (1 / 3 + 3 / 5) / 2),
    ],
)
def test_two_class_mean_iou_hand_worked(pred, true, expected):
    assert two_class_mean_iou(np.array(pred, bool), np.array(true, bool)) == pytest.approx(expected)


def test_two_class_mean_iou_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        two_class_mean_iou(np.zeros((1, 2, 2), bool), np.zeros((1, 2, 3), bool))


def test_two_class_mean_iou_matches_keras_mean_iou():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(1)
    # (3, 16, 16): sparse opacities, as in chest X-rays, so the two classes differ a lot
    true = rng.random((3, 16, 16)) < 0.1
    pred = true ^ (rng.random((3, 16, 16)) < 0.05)
    metric = keras.metrics.MeanIoU(num_classes=2)
    metric.update_state(true.astype("int32").ravel(), pred.astype("int32").ravel())
    assert two_class_mean_iou(pred, true) == pytest.approx(float(metric.result()), abs=1e-6)


def test_boxes_from_mask_components_and_scale():
    # (8, 8): two blobs, the right one more confident
    prob = np.zeros((8, 8), np.float32)
    prob[1:3, 1:4] = 0.6
    prob[5:8, 6:8] = 0.9
    boxes = boxes_from_mask(prob, 0.5, scale=(2.0, 4.0))
    assert boxes == [(pytest.approx(0.9), 12.0, 20.0, 4.0, 12.0), (pytest.approx(0.6), 2.0, 4.0, 6.0, 8.0)]
    assert boxes_from_mask(np.zeros((4, 4)), 0.5) == []


def test_prediction_string_round_trip():
    boxes = parse_prediction_string("0.5 10 20 30 40 0.25 1 2 3 4")
    assert boxes == [(0.5, 10, 20, 30, 40), (0.25, 1, 2, 3, 4)]
    assert parse_prediction_string(format_prediction_string(boxes)) == boxes
    assert parse_prediction_string("") == []
    with pytest.raises(ValueError, match="groups of 5"):
        parse_prediction_string("0.5 1 2 3")


def test_classification_metrics():
    labels = np.array([1, 1, 0, 0, 0])
    probs = np.array([0.9, 0.4, 0.6, 0.1, 0.2])  # TP, FN, FP, TN, TN
    m = classification(labels, probs)
    assert m["confusion_matrix"] == [[2, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["specificity"] == pytest.approx(2 / 3)
    assert m["f1"] == 0.5
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of 6 positive/negative pairs ranked right
