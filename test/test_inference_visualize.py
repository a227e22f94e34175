"""draw_overlay: 50 % blend on mask pixels only, fixed class colours, labelled boxes."""
from __future__ import annotations

import numpy as np
import pytest

from hybridnets_ros.inference.letterbox import Letterbox
from hybridnets_ros.inference.postprocess import Detections, FrameResult
from hybridnets_ros.inference.visualize import blend_segmentation, draw_overlay, seg_colour_table


def _result(mask: np.ndarray, boxes: list[list[float]]) -> FrameResult:
    det = Detections(
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        scores=np.full(len(boxes), 0.87, dtype=np.float32),
        class_ids=np.zeros(len(boxes), dtype=np.int64),
    )
    return FrameResult(det, mask, Letterbox.fit(mask.shape, (384, 640)))


def test_masks_blend_half_and_leave_background_untouched():
    image = np.full((60, 80, 3), 100, dtype=np.uint8)
    mask = np.zeros((60, 80), dtype=np.uint8)
    mask[:10] = 1
    mask[50:] = 2
    out = draw_overlay(image, _result(mask, []), ["car"], ["road", "lane"])
    colours = seg_colour_table(["road", "lane"]).astype(np.float32)
    np.testing.assert_array_equal(out[5, 5], np.round(0.5 * 100 + 0.5 * colours[1]).astype(np.uint8))
    np.testing.assert_array_equal(out[55, 5], np.round(0.5 * 100 + 0.5 * colours[2]).astype(np.uint8))
    assert (out[10:50] == 100).all()
    assert (image == 100).all()  # the input is not modified


def test_fixed_colours_road_green_lane_red():
    table = seg_colour_table(["road", "lane", "kerb"])
    b, g, r = table[1]
    assert g > r and g > b  # road: green-ish
    b, g, r = table[2]
    assert r > g and r > b  # lane: red
    assert table[3].any() and not np.array_equal(table[3], table[1])


def test_boxes_and_labels_are_drawn():
    image = np.zeros((120, 160, 3), dtype=np.uint8)
    out = draw_overlay(image, _result(np.zeros((120, 160), np.uint8), [[40, 50, 120, 110]]), ["car"], ["road", "lane"])
    assert out[80, 40].any() and out[80, 120].any()  # left and right edges
    assert not out[80, 80].any()  # inside the box
    assert out[30:50, 40:100].any()  # label above the box


def test_size_mismatch_is_rejected():
    with pytest.raises(ValueError, match="differ in size"):
        draw_overlay(np.zeros((10, 10, 3), np.uint8), _result(np.zeros((5, 5), np.uint8), []), ["car"], ["road"])


def _reference_blend(image: np.ndarray, mask: np.ndarray, seg_names: list[str]) -> np.ndarray:
    """The blend as first written (boolean indexing, float32 weights, np.round): the fast path must equal it."""
    out = image.copy()
    on = mask > 0
    colours = seg_colour_table(seg_names)[np.minimum(mask[on], len(seg_names))]
    out[on] = np.round(out[on].astype(np.float32) * 0.5 + colours.astype(np.float32) * 0.5).astype(np.uint8)
    return out


def test_blend_equals_the_reference_bit_for_bit():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (73, 131, 3), dtype=np.uint8)  # odd sizes; every grey level hits half-way cases
    mask = rng.integers(0, 5, (73, 131), dtype=np.uint8)  # 3 and 4 exceed the class count: they take the last colour
    np.testing.assert_array_equal(blend_segmentation(image, mask, ["road", "lane"]),
                                  _reference_blend(image, mask, ["road", "lane"]))


def test_overlay_of_a_strided_view_equals_that_of_a_copy():
    rng = np.random.default_rng(4)
    padded = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    view = padded[:, :64]  # rows padded like an Image message with step > width * 3
    mask = rng.integers(0, 3, (40, 64), dtype=np.uint8)
    result = _result(mask, [[5, 5, 30, 30]])
    np.testing.assert_array_equal(draw_overlay(view, result, ["car"], ["road", "lane"]),
                                  draw_overlay(view.copy(), result, ["car"], ["road", "lane"]))
