"""Golden comparisons that hold on any x86-64 CPU: the robust rule of ../shared/golden/README.md, in one place.

The golden ``few_conf_thresh`` equals the 41st-best anchor's score exactly, and near-tied scores differ by less than
the classification tolerance. On another CPU (measured: AMD EPYC without AVX-512 kernels vs the Intel AVX-512 that
made the golden files; here ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` reproduces it) that anchor lands
just above the threshold and near-tied boxes swap places. So a golden comparison

* runs at :func:`run_threshold` (``few_conf_thresh - 1e-3``): no candidate near the golden threshold is lost;
* compares only the boxes scoring above :func:`compare_cut` (``few_conf_thresh + 1e-3``) on either side: greedy NMS
  decides each box from higher-scored boxes only, so the candidates near the threshold cannot change them;
* pairs boxes by IoU >= 0.99 and the same class, never by position in the list.

A box just above the cut on one side may score just below it on the other (image 3 has a golden score 1.7e-5 above
the cut): its partner is then looked for among all of that side's boxes, so the rule never hinges on the cut either.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hybridnets_ros.inference.box_pairing import pair_boxes
from hybridnets_ros.inference.postprocess import Detections

DEMO_IMAGES = (1, 2, 3)
# ../shared/golden/README.md: the threshold margin, and the suggested checks for variant C.
SCORE_MARGIN = 1e-3
SCORE_ATOL = 5e-4
MIN_IOU = 0.99
MIN_MASK_AGREEMENT = 0.999


def load_post(golden_dir: Path, index: int, variant: str = "seed0_variantC") -> dict[str, np.ndarray]:
    """The golden post-processed results of demo image ``index`` (1..3) for ``variant`` (``seed0`` = A)."""
    return dict(np.load(golden_dir / f"post_{variant}_img{index}.npz"))


def run_threshold(post: dict[str, np.ndarray]) -> float:
    """Score threshold to run at: the golden ``few_`` threshold lowered by the margin."""
    return float(post["few_conf_thresh"]) - SCORE_MARGIN


def compare_cut(post: dict[str, np.ndarray]) -> float:
    """Boxes scoring above this (on either side) are compared: the golden ``few_`` threshold plus the margin."""
    return float(post["few_conf_thresh"]) + SCORE_MARGIN


def golden_detections(post: dict[str, np.ndarray], boxes_key: str = "few_rois_orig") -> Detections:
    """The golden ``few_`` boxes (``few_rois_orig`` original px, or ``few_rois_input`` network px) as Detections."""
    return Detections(post[boxes_key].astype(np.float32), post["few_scores"].astype(np.float32),
                      post["few_class_ids"].astype(np.int64))


def assert_same_boxes(reference: Detections, got: Detections, cut: float, what: str,
                      score_atol: float = SCORE_ATOL) -> int:
    """Every box scoring above ``cut`` on either side has its own partner on the other side: the same class, IoU >=
    0.99 (zero-area boxes, left by clipping: all corners within 0.5 px) and a score within ``score_atol``
    (:func:`hybridnets_ros.inference.box_pairing.pair_boxes`). Returns the number of pairs.
    """
    pairing = pair_boxes(reference.boxes, reference.scores, reference.class_ids, got.boxes, got.scores,
                         got.class_ids, cut, MIN_IOU)
    if pairing.unpaired_reference:
        r, iou = pairing.unpaired_reference[0]
        raise AssertionError(f"{what}: reference box {r} {reference.boxes[r].tolist()} (score "
                             f"{reference.scores[r]:.6f}) has no partner (best free IoU {iou:.4f})")
    if pairing.unpaired:
        g, iou = pairing.unpaired[0]
        raise AssertionError(f"{what}: box {g} {got.boxes[g].tolist()} (score {got.scores[g]:.6f}) is not in the "
                             f"reference (best free IoU {iou:.4f})")
    assert pairing.pairs, f"{what}: no box scores above {cut:.6f} on either side: nothing was compared"
    worst = pairing.worst_score_gap
    assert worst <= score_atol, f"{what}: paired scores differ by up to {worst:.2e} > {score_atol:.0e}"
    return len(pairing.pairs)


def assert_matches_golden(got: Detections, post: dict[str, np.ndarray], what: str,
                          boxes_key: str = "few_rois_orig", score_atol: float = SCORE_ATOL) -> int:
    """``got`` (run at :func:`run_threshold`) agrees with the golden ``few_`` boxes above :func:`compare_cut`.

    ``score_atol``: the classification tolerance; tighter where the scores are the golden raw heads' own values.
    """
    return assert_same_boxes(golden_detections(post, boxes_key), got, compare_cut(post), what, score_atol)


def mask_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels where two class-ID masks of the same shape agree."""
    assert a.shape == b.shape, f"mask shapes differ: {a.shape} vs {b.shape}"
    return float((a == b).mean())
