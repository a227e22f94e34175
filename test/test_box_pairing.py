"""matched_min_iou: greedy pairing by rank, as the export check and the backend tests use it."""
from __future__ import annotations

import numpy as np

from hybridnets_ros.inference.box_pairing import matched_min_iou


def test_swapped_ranks_still_pair_with_their_own_boxes() -> None:
    ious = np.array([[0.1, 0.995], [0.999, 0.2]])  # near-equal scores swapped the two boxes' ranks
    assert matched_min_iou(ious) == 0.995


def test_an_earlier_rank_takes_its_best_partner_first() -> None:
    # Row 0 takes column 0 (0.9), so row 1 is left with column 1 although column 0 suits it better.
    ious = np.array([[0.9, 0.5], [0.95, 0.3]])
    assert matched_min_iou(ious) == 0.3


def test_rows_without_a_free_column_count_zero_and_no_rows_count_one() -> None:
    assert matched_min_iou(np.array([[0.99], [0.98]])) == 0.0
    assert matched_min_iou(np.zeros((0, 3))) == 1.0
