import cv2
import numpy as np
import pytest
from PIL import Image

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


@pytest.mark.parametrize("shape", [(1024, 1024), (512, 384), (37, 53)])
@pytest.mark.parametrize("size", [1, 7, 64, 100, 224, 300])
def test_load_mask_equals_opencvs_nearest_resize_of_the_whole_png(tmp_path, shape, size):
    """The packed 1-bit read gives, pixel for pixel, what OpenCV's 8-bit read and INTER_NEAREST
    resize give: downscaled, upscaled, non-square, and for an 8-bit PNG (read whole)."""
    from pneumoflow.formats.arrays import load_mask

    rng = np.random.default_rng(size)
    rows, cols = shape
    corners = rng.uniform(0, 1, (3, 2)) * (cols, rows)
    sides = rng.uniform(1, cols / 3, (3, 2))
    boxes = [(*corner, *side) for corner, side in zip(corners, sides, strict=True)]
    boxes += [(5, 3, 1, 1)]  # a 1-pixel box, which most resizes skip
    mask = box_mask(boxes, rows, cols)
    write_png(tmp_path / "m.png", mask)
    cv2.imwrite(str(tmp_path / "m8.png"), mask)  # 8 bits a pixel
    with Image.open(tmp_path / "m.png") as one_bit, Image.open(tmp_path / "m8.png") as eight_bit:
        assert (one_bit.mode, eight_bit.mode) == ("1", "L")  # the packed read, and the whole one
    expected = (cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST) > 127).astype(np.uint8)
    for png in ("m.png", "m8.png"):
        got = load_mask(tmp_path / png, size, shape)
        assert got.dtype == np.uint8 and got.shape == (size, size)
        np.testing.assert_array_equal(got, expected, err_msg=png)
    with pytest.raises(ValueError, match="is not 10x20 pixels"):
        load_mask(tmp_path / "m.png", size, (10, 20))


def test_a_cut_short_mask_png_names_its_file(tmp_path):
    from pneumoflow.formats.arrays import load_mask

    write_png(tmp_path / "m.png", box_mask([(10, 20, 300, 400)], 1024, 1024))
    data = (tmp_path / "m.png").read_bytes()
    (tmp_path / "m.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="cannot read .*m.png"):
        load_mask(tmp_path / "m.png", 64, (1024, 1024))
