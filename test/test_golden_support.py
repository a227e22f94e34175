"""The cross-CPU golden comparison itself (golden_support): what it tolerates and what it still catches."""
from __future__ import annotations

import numpy as np
import pytest

from golden_support import assert_same_boxes
from hybridnets_ros.inference.postprocess import Detections

CUT = 0.5
# Three boxes far apart (post-NMS boxes overlap by at most the NMS IoU), by descending score.
BOXES = np.array([[0, 0, 100, 100], [200, 0, 300, 100], [400, 0, 500, 100]], dtype=np.float32)
SCORES = np.array([0.9, 0.7, 0.5004], dtype=np.float32)


def _detections(boxes: np.ndarray, scores: np.ndarray) -> Detections:
    return Detections(boxes.astype(np.float32), scores.astype(np.float32), np.zeros(len(boxes), dtype=np.int64))


REFERENCE = _detections(BOXES, SCORES)


def test_order_rounding_and_a_box_across_the_cut_are_tolerated() -> None:
    """Near-tied boxes swapped, coordinates off by rounding, a score crossing the cut (the AMD EPYC cases)."""
    got = _detections(BOXES[[1, 0, 2]] + 0.01, SCORES[[1, 0, 2]] + np.float32(-0.0004))
    assert assert_same_boxes(REFERENCE, got, CUT, "swapped") == 3
    # Extra boxes below the cut on both sides (the candidates near the golden threshold) are not compared.
    extra = _detections(np.concatenate([BOXES, [[600, 0, 700, 100]]]), np.append(SCORES, 0.45))
    assert assert_same_boxes(REFERENCE, extra, CUT, "extra below the cut") == 3


@pytest.mark.parametrize(("change", "message"), [
    ("missing", "reference box 1 .* has no partner"),
    ("extra", "box 3 .* is not in the reference"),
    ("moved", "reference box 0 .* has no partner"),
    ("score", "paired scores differ by up to 1.00e-03"),
    ("class", "reference box 0 .* has no partner"),
])
def test_real_differences_are_caught(change: str, message: str) -> None:
    boxes, scores, classes = BOXES.copy(), SCORES.copy(), np.zeros(3, dtype=np.int64)
    if change == "missing":
        boxes, scores, classes = boxes[[0, 2]], scores[[0, 2]], classes[[0, 2]]
    elif change == "extra":
        boxes = np.concatenate([boxes, [[600, 0, 700, 100]]]).astype(np.float32)
        scores, classes = np.append(scores, np.float32(0.8)), np.append(classes, 0)
    elif change == "moved":
        boxes[0] += 2.0  # IoU 0.96
    elif change == "score":
        scores[0] += np.float32(1e-3)
    else:
        classes[0] = 1
    with pytest.raises(AssertionError, match=message):
        assert_same_boxes(REFERENCE, Detections(boxes, scores, classes), CUT, change)


def test_nothing_above_the_cut_is_an_error() -> None:
    with pytest.raises(AssertionError, match="nothing was compared"):
        assert_same_boxes(REFERENCE, REFERENCE, 0.95, "empty")
