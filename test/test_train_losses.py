"""Losses against hand-computed values: anchor matching, focal/smooth-L1 detection terms, Tversky + focal seg."""
from __future__ import annotations

import math

import pytest
import torch

from hybridnets_ros.inference.box_coder import encode_boxes
from hybridnets_ros.training.losses import (
    DetectionLoss,
    HybridNetsLoss,
    SegmentationLoss,
    anchor_box_iou,
    match_anchors,
    tversky_loss,
)

# Anchors (y1,x1,y2,x2): a 20x20 one at the origin, a 20x20 one at x 100..120, and a 4x4 one at 200..204.
ANCHORS = torch.tensor([[0, 0, 20, 20], [0, 100, 20, 120], [0, 200, 4, 204]], dtype=torch.float32)


def _focal_neg(p: float) -> float:
    return 0.75 * p**2 * -math.log(1 - p)


def _focal_pos(p: float) -> float:
    return 0.25 * (1 - p) ** 2 * -math.log(p)


def test_iou_and_matching_thresholds() -> None:
    boxes = torch.tensor([[[0, 0, 20, 10, 0],        # large (200 px²), IoU 0.5 with anchor 0 -> positive
                           [100, 0, 120, 8, 0],      # large (160 px²), IoU 0.4 with anchor 1 -> negative
                           [200, 0, 202, 2, 0]]],    # small (4 px²), IoU 0.25 with anchor 2 -> positive
                         dtype=torch.float32)
    iou = anchor_box_iou(ANCHORS, boxes[..., :4])
    torch.testing.assert_close(torch.diagonal(iou[0]), torch.tensor([0.5, 0.4, 0.25]))
    positive, assigned = match_anchors(ANCHORS, boxes)
    assert positive.tolist() == [[True, False, True]]
    torch.testing.assert_close(assigned[0, 2], boxes[0, 2])


def test_padding_rows_are_never_matched() -> None:
    padded = torch.tensor([[[-1, -1, -1, -1, -1], [0, 0, 20, 20, -1]]], dtype=torch.float32)
    positive, _ = match_anchors(ANCHORS, padded)
    assert not positive.any()


def test_image_without_boxes_gets_only_the_negative_term() -> None:
    probs = torch.tensor([[[0.1], [0.2], [0.5]]])
    cls_loss, reg_loss = DetectionLoss()(probs, torch.randn(1, 3, 4), ANCHORS, torch.full((1, 1, 5), -1.0))
    expected = _focal_neg(0.1) + _focal_neg(0.2) + _focal_neg(0.5)  # sum / max(1, 0 positives)
    assert cls_loss.item() == pytest.approx(expected, rel=1e-5)
    assert reg_loss.item() == 0.0


def test_detection_loss_by_hand() -> None:
    boxes = torch.tensor([[[0, 0, 20, 10, 0]]], dtype=torch.float32)  # matches anchor 0 only
    probs = torch.tensor([[[0.7], [0.2], [0.1]]])
    regression = torch.zeros(1, 3, 4)
    regression[0, 0] = torch.tensor([0.1, 0.0, 0.0, 0.05])
    cls_loss, reg_loss = DetectionLoss()(probs, regression, ANCHORS, boxes)
    assert cls_loss.item() == pytest.approx(_focal_pos(0.7) + _focal_neg(0.2) + _focal_neg(0.1), rel=1e-5)
    target = [(5 - 10) / 20, 0.0, math.log(10 / 20), 0.0]  # dy, dx, dh, dw
    beta = 1 / 9
    def smooth(d: float) -> float:
        return 0.5 * d * d / beta if abs(d) <= beta else abs(d) - 0.5 * beta
    expected = 50 * sum(smooth(t - r) for t, r in zip(target, [0.1, 0.0, 0.0, 0.05])) / 4
    assert reg_loss.item() == pytest.approx(expected, rel=1e-5)


def test_perfect_regression_has_zero_box_loss_and_batching_equals_per_image_mean() -> None:
    torch.manual_seed(0)
    anchors = torch.tensor([[y, x, y + 32, x + 32] for y in range(0, 128, 16) for x in range(0, 256, 16)],
                           dtype=torch.float32)
    boxes_a = torch.tensor([[10, 12, 44, 40, 0], [100, 50, 140, 90, 1]], dtype=torch.float32)
    boxes_b = torch.tensor([[200, 60, 236, 100, 1]], dtype=torch.float32)
    annotations = torch.full((2, 2, 5), -1.0)
    annotations[0], annotations[1, :1] = boxes_a, boxes_b
    probs = torch.rand(2, len(anchors), 2)
    positive, assigned = match_anchors(anchors, annotations)
    assert positive.sum(dim=1).min() > 0
    perfect = encode_boxes(anchors, assigned[..., :4])
    loss = DetectionLoss()
    _, reg = loss(probs, perfect, anchors, annotations)
    assert reg.item() == pytest.approx(0.0, abs=1e-5)
    regression = torch.randn(2, len(anchors), 4) * 0.3
    batched = loss(probs, regression, anchors, annotations)
    single_a = loss(probs[:1], regression[:1], anchors, boxes_a[None])
    single_b = loss(probs[1:], regression[1:], anchors, boxes_b[None])
    for together, a, b in zip(batched, single_a, single_b):
        assert together.item() == pytest.approx((a.item() + b.item()) / 2, rel=1e-5)


def test_tversky_by_hand_and_absent_classes_are_zeroed() -> None:
    probs = torch.tensor([[[[0.8, 0.6]], [[0.2, 0.4]]]])  # (B=1, C=2, H=1, W=2)
    target = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    tp0, fp0, fn0 = 0.8, 0.6, 0.2
    tp1, fp1, fn1 = 0.4, 0.2, 0.6
    t0 = tp0 / (tp0 + 0.7 * fp0 + 0.3 * fn0)
    t1 = tp1 / (tp1 + 0.7 * fp1 + 0.3 * fn1)
    expected = (((1 - t0) + (1 - t1)) / 2) ** (4 / 3)
    assert tversky_loss(probs, target, 0.7, 0.3, 4 / 3).item() == pytest.approx(expected, rel=1e-5)
    target_absent = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.0]]]])
    t0 = 1.4 / (1.4 + 0.3 * 0.6)
    expected = ((1 - t0) / 2) ** (4 / 3)  # class 1 absent from the target: contributes 0 (still counted in the mean)
    assert tversky_loss(probs, target_absent, 0.7, 0.3, 4 / 3).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mode, channels", [("multiclass", 3), ("binary", 1), ("multilabel", 3)])
def test_seg_loss_is_small_for_confident_correct_logits_and_large_for_wrong(mode: str, channels: int) -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, 3, (2, 16, 16))
    if mode == "multiclass":
        target = ids.to(torch.uint8)
        one_hot = torch.nn.functional.one_hot(ids, 3).permute(0, 3, 1, 2).float()
    elif mode == "binary":
        target = (ids == 1).to(torch.uint8)[:, None]
        one_hot = target.float()
    else:
        target = torch.stack([ids == 0, ids >= 1, ids == 2], dim=1).to(torch.uint8)  # overlapping labels
        one_hot = target.float()
    loss = SegmentationLoss(mode)
    good = loss((one_hot * 2 - 1) * 12, target)
    bad = loss((1 - 2 * one_hot) * 12, target)
    assert good.item() < 1e-3 and bad.item() > 1.0
    logits = torch.zeros(2, channels, 16, 16, requires_grad=True)
    loss(logits, target).backward()
    assert logits.grad.abs().sum() > 0


def test_frozen_heads_skip_their_terms() -> None:
    probs, reg = torch.rand(1, 3, 1), torch.zeros(1, 3, 4)
    seg, seg_t = torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.uint8)
    ann = torch.full((1, 1, 5), -1.0)
    det_only = HybridNetsLoss("multiclass", compute_seg=False)(reg, probs, seg, ANCHORS, ann, seg_t)
    seg_only = HybridNetsLoss("multiclass", compute_det=False)(reg, probs, seg, ANCHORS, ann, seg_t)
    assert det_only.segmentation is None and det_only.classification is not None
    assert seg_only.classification is None and seg_only.regression is None and seg_only.segmentation is not None
    assert seg_only.total().item() == pytest.approx(seg_only.segmentation.item())
