"""The evaluate stage's streaming helpers pick what the whole-split code picked."""

import numpy as np

from pneumoflow.stages.evaluate import Samples


def test_samples_offered_shard_by_shard_match_the_whole_split_order():
    # (10,) images numbered 0..9; opacity on 2, 5, 6, 9: the overlays show those first, in order
    images = np.arange(10)
    has_opacity = np.isin(images, [2, 5, 6, 9])
    samples = Samples(n=6, opacity_first=True)
    for part in (slice(0, 4), slice(4, 7), slice(7, 10)):
        samples.offer(images[part], images[part] * 10, has_opacity=has_opacity[part])
    shown, masks = samples.arrays()
    expected = sorted(range(10), key=lambda i: -int(has_opacity[i]))[:6]  # plot_overlays' order
    assert shown.tolist() == expected and masks.tolist() == [10 * i for i in expected]


def test_samples_without_priority_are_the_first_n():
    samples = Samples(n=3)
    samples.offer(np.array([7]), np.array([1]))
    samples.offer(np.array([8, 9, 10]), np.array([0, 1, 0]))
    images, labels = samples.arrays()
    assert images.tolist() == [7, 8, 9] and labels.tolist() == [1, 0, 1]
