import cv2
import numpy as np
import pytest

from pneumoflow.formats.masks import box_mask, write_png


def test_box_mask_union():
    # (5, 6) frame: box (1, 1, 2, 2) covers rows 1-2, cols 1-2; box (3, 2, 3, 3) rows 2-4, cols 3-5
    mask = box_mask([(1, 1, 2, 2), (3, 2, 3, 3)], rows=5, cols=6)
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0],
            [0, 1, 1, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
        ],
        np.uint8,
    )
    np.testing.assert_array_equal(mask, expected * 255)


def test_no_boxes_gives_empty_mask():
    mask = box_mask([], rows=4, cols=3)
    assert mask.shape == (4, 3) and mask.dtype == np.uint8 and not mask.any()


@pytest.mark.parametrize("box, ones", [((0.4, 0.6, 1.2, 1.0), 2), ((-2, -2, 3, 3), 1)])
def test_box_edges_round_and_clip(box, ones):
    assert box_mask([box], rows=4, cols=4).astype(bool).sum() == ones


def test_png_is_lossless(tmp_path):
    mask = box_mask([(10, 20, 30, 40)], rows=100, cols=90)
    write_png(tmp_path / "m.png", mask)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_GRAYSCALE), mask)
