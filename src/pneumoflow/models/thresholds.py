"""Operating thresholds of the classifiers, chosen on the validation split.

Its own module, apart from the test metrics: training reaches it, and an edit to the
test metrics must not retrain anything (README, Reruns).
"""

from __future__ import annotations

import numpy as np

# how the saved threshold was chosen: model.pt, model.json, MLflow tags and metrics.json name it
RULE = "youden_j_on_val"


def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The operating threshold that maximises Youden's J (sensitivity + specificity - 1) on
    labels (N,) {0, 1} and probabilities (N,) float; 0.5 when a class is missing.

    Every threshold between two neighbouring scores makes the same decisions, so J picks an
    interval, not a point: 0.5 when it lies inside that interval (the model's own calibration
    agrees with the validation split), else the interval's midpoint (away from both scores).
    """
    from sklearn.metrics import roc_curve

    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, cuts = roc_curve(labels.astype(int), probs, drop_intermediate=False)
    j = tpr - fpr
    # p >= cuts[i] is positive: every threshold in (cuts[i + 1], cuts[i]] decides the same
    lowers = np.append(np.maximum(cuts[1:], 0.0), 0.0)
    best = [(lowers[i], min(cuts[i], 1.0)) for i in np.flatnonzero(np.isclose(j, j.max()))]
    for lower, upper in best:
        if lower < 0.5 <= upper:
            return 0.5
    lower, upper = min(best, key=lambda b: min(abs(b[0] - 0.5), abs(b[1] - 0.5)))
    return float((lower + upper) / 2)
