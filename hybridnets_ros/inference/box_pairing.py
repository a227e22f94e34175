"""Box pairing for golden comparisons that hold on any device or CPU (the robust rule of shared/golden/README.md).

Greedy NMS decides each box from higher-scored boxes only, so boxes scoring clearly above the threshold are the same
on every device, while near-tied boxes may swap places and a box near the threshold may land on either side. So
every box scoring above ``cut`` on either side must have its own partner on the other side: the same class, IoU >=
``min_iou`` (zero-area boxes, left by clipping: all corners within :data:`CLOSE_PX`), never by list position; the
partner may score below the cut (a box just above it on one side may be just below it on the other). Paired scores
are then compared with a tolerance by the caller (:meth:`BoxPairing.passed`).

Imports only numpy: ``gpu_check`` runs from a source tree on a bare machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLOSE_PX = 0.5  # boxes whose four corners all agree this closely count as IoU 1 (zero-area boxes have IoU 0)


@dataclass(frozen=True)
class BoxPairing:
    """One-to-one pairs of reference and compared boxes; the boxes above the cut that found none."""

    pairs: dict[int, int]  # reference index -> compared index
    unpaired_reference: list[tuple[int, float]]  # (reference index, best free IoU)
    unpaired: list[tuple[int, float]]  # (compared index, best free IoU)
    worst_iou: float  # smallest IoU of a pair (1.0 without pairs)
    worst_score_gap: float  # largest |score difference| of a pair (0.0 without pairs)

    def passed(self, score_atol: float) -> bool:
        """Every box above the cut has a partner and paired scores differ by at most ``score_atol``."""
        return not self.unpaired_reference and not self.unpaired and self.worst_score_gap <= score_atol


def box_agreement(reference: np.ndarray, boxes: np.ndarray, close_px: float = CLOSE_PX) -> np.ndarray:
    """Pairwise (N, M) IoU of x1y1x2y2 boxes reference (N, 4) and boxes (M, 4), in float64; 1 where all four
    coordinates agree within ``close_px``."""
    a = np.asarray(reference, dtype=np.float64)[:, None, :]
    b = np.asarray(boxes, dtype=np.float64)[None, :, :]
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
             - inter)
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return np.where(np.abs(a - b).max(axis=-1) <= close_px, 1.0, iou)


def _partner(ious: np.ndarray, taken: set[int]) -> tuple[int, float]:
    """Index and IoU of the best partner not yet taken in one row of IoUs; (-1, 0) when there is none."""
    row = ious.copy()
    row[list(taken)] = -1.0
    if not len(row) or row.max() < 0:
        return -1, 0.0
    best = int(row.argmax())
    return best, float(row[best])


def matched_min_iou(ious: np.ndarray) -> float:
    """Smallest IoU of (N, M) ``ious`` when each reference box (row, by rank) takes its best still free partner
    (column), however low; a row left without a free column counts 0. 1.0 without rows."""
    taken: set[int] = set()
    worst = 1.0
    for row in ious:
        partner, iou = _partner(row, taken)
        taken.add(partner)
        worst = min(worst, iou)
    return worst


def pair_boxes(ref_boxes: np.ndarray, ref_scores: np.ndarray, ref_classes: np.ndarray, boxes: np.ndarray,
               scores: np.ndarray, classes: np.ndarray, cut: float, min_iou: float) -> BoxPairing:
    """Pair every box scoring above ``cut`` on either side (reference: (N, 4) x1y1x2y2, (N,) scores, (N,) class
    ids; compared: (M, 4), (M,), (M,)) with its best free partner of the same class on the other side.

    Reference boxes choose first, by index (rank); then the compared boxes above the cut not chosen yet. Boxes kept by
    NMS overlap each other by at most the NMS IoU, so a box has at most one partner that close.
    """
    ious = np.zeros((len(ref_boxes), len(boxes)))
    if len(ref_boxes) and len(boxes):
        ious = box_agreement(ref_boxes, boxes)
        ious[np.asarray(ref_classes)[:, None] != np.asarray(classes)[None, :]] = 0.0
    pairs: dict[int, int] = {}
    unpaired_reference: list[tuple[int, float]] = []
    for r in np.flatnonzero(np.asarray(ref_scores) > cut):
        g, iou = _partner(ious[r], set(pairs.values()))
        if iou >= min_iou:
            pairs[int(r)] = g
        else:
            unpaired_reference.append((int(r), iou))
    unpaired: list[tuple[int, float]] = []
    for g in np.flatnonzero(np.asarray(scores) > cut):
        if g in pairs.values():
            continue
        r, iou = _partner(ious[:, g], set(pairs))
        if iou >= min_iou:
            pairs[r] = int(g)
        else:
            unpaired.append((int(g), iou))
    ref_index, index = np.array(list(pairs), dtype=np.int64), np.array(list(pairs.values()), dtype=np.int64)
    gaps = np.abs(np.asarray(ref_scores, np.float64)[ref_index] - np.asarray(scores, np.float64)[index])
    return BoxPairing(pairs, unpaired_reference, unpaired,
                      float(ious[ref_index, index].min()) if pairs else 1.0, float(gaps.max()) if pairs else 0.0)
