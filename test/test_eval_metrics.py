"""Evaluation metrics against hand-computed values on constructed cases."""
from __future__ import annotations

import pytest
import torch

from hybridnets_ros.training.metrics import (
    IOU_THRESHOLDS,
    DetectionAccumulator,
    SegmentationAccumulator,
    average_precision,
    balanced_accuracy,
    box_iou,
    confusion_stats_binary,
    confusion_stats_multiclass,
    iou_score,
    match_detections,
    precision_recall_curve,
)


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def _ids(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def _evaluate(images, class_names=("car",), operating_threshold=0.25):
    """images: list of (pred_boxes, scores, pred_classes, gt_boxes, gt_classes) in plain lists."""
    acc = DetectionAccumulator()
    for pb, ps, pc, gb, gc in images:
        acc.update(_t(pb), torch.tensor(ps, dtype=torch.float32), _ids(pc), _t(gb), _ids(gc))
    return acc.compute(list(class_names), operating_threshold)


# ------------------------------------------------------------------------------------------------------ box IoU
def test_box_iou_hand_values():
    iou = box_iou(_t([[0, 0, 10, 10], [0, 0, 10, 10]]), _t([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]]))
    assert iou[0, 0].item() == pytest.approx(1 / 3)  # intersection 50, union 150
    assert iou[0, 1].item() == pytest.approx(1.0)
    assert iou[0, 2].item() == 0.0
    assert box_iou(_t([[0, 0, 0, 0]]), _t([[0, 0, 0, 0]])).item() == 0.0  # degenerate: no NaN


# ------------------------------------------------------------------------------------------------- detection AP
def test_perfect_predictions_give_ap_one():
    gt = [[0, 0, 10, 10], [20, 0, 30, 12], [40, 5, 52, 20]]
    m = _evaluate([(gt, [0.9, 0.8, 0.7], [0, 0, 0], gt, [0, 0, 0]), (gt[:1], [0.6], [0], gt[:1], [0])])
    assert m["map50"] == pytest.approx(1.0)
    assert m["map50_95"] == pytest.approx(1.0)
    assert m["precision"] == pytest.approx(1.0) and m["recall"] == pytest.approx(1.0)
    assert m["num_gt"] == 4 and m["num_pred"] == 4


def test_empty_predictions_give_zero():
    m = _evaluate([([], [], [], [[0, 0, 10, 10]], [0])])
    assert m["map50"] == 0.0 and m["map50_95"] == 0.0
    assert m["recall"] == 0.0 and m["precision"] == 0.0 and m["recall_op"] == 0.0
    assert m["per_class"]["car"].ap50 == 0.0 and m["num_pred"] == 0


def test_empty_ground_truth_is_undefined_and_excluded():
    only_fp = _evaluate([([[0, 0, 10, 10]], [0.9], [0], [], [])])
    assert only_fp["map50"] == 0.0 and only_fp["recall"] == 0.0
    assert only_fp["per_class"]["car"].ap50 is None and only_fp["per_class"]["car"].num_pred == 1
    nothing = _evaluate([([], [], [], [], [])])
    assert nothing["map50"] == 0.0 and nothing["num_gt"] == 0 and nothing["num_pred"] == 0
    # A class without GT anywhere does not drag the mean down: class 1's false positive leaves class 0 at AP 1.
    two = _evaluate(
        [([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.95], [0, 1], [[0, 0, 10, 10]], [0])], class_names=("car", "bus")
    )
    assert two["map50"] == pytest.approx(1.0)
    assert two["per_class"]["bus"].ap50 is None and two["per_class"]["car"].ap50 == pytest.approx(1.0)


def test_partial_overlap_counts_only_at_reachable_thresholds():
    # IoU 1/3 is below 0.5: a miss and a false positive.
    m = _evaluate([([[5, 0, 15, 10]], [0.9], [0], [[0, 0, 10, 10]], [0])])
    assert m["map50"] == 0.0 and m["recall"] == 0.0
    # IoU 0.72 passes the thresholds 0.5, 0.55, 0.6, 0.65, 0.7: AP 1 at five of ten -> mAP50:95 = 0.5.
    m = _evaluate([([[0, 0, 10, 7.2]], [0.9], [0], [[0, 0, 10, 10]], [0])])
    assert m["map50"] == pytest.approx(1.0)
    assert m["map50_95"] == pytest.approx(0.5)


def test_known_pr_curve_101_point_ap():
    # 4 GT; predictions by descending score: TP, FP, TP, TP, FP.
    # recall    .25  .25  .50  .75  .75 ; precision 1  1/2  2/3  3/4  3/5
    # envelope  1    3/4  3/4  3/4  3/5 ; recall levels 0..0.25 (26 of them) -> 1, 0.26..0.75 (50) -> 3/4,
    # 0.76..1 (25) never reached -> 0.  AP = (26 * 1 + 50 * 0.75) / 101.
    gt = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]]
    preds = [[0, 0, 10, 10], [100, 100, 110, 110], [20, 0, 30, 10], [40, 0, 50, 10], [200, 200, 210, 210]]
    m = _evaluate([(preds, [0.9, 0.8, 0.7, 0.6, 0.5], [0] * 5, gt, [0] * 4)], operating_threshold=0.65)
    assert m["map50"] == pytest.approx((26 + 50 * 0.75) / 101)
    # Reference protocol: every prediction kept -> P = 3/5, R = 3/4; at score > 0.65: 2 TP of 3 predictions.
    assert m["precision"] == pytest.approx(0.6) and m["recall"] == pytest.approx(0.75)
    assert m["precision_op"] == pytest.approx(2 / 3) and m["recall_op"] == pytest.approx(0.5)


def test_average_precision_function_on_curve():
    correct = torch.tensor([[True], [False], [True], [True], [False]])
    precision, recall = precision_recall_curve(correct, num_gt=4)
    assert recall[:, 0].tolist() == [0.25, 0.25, 0.5, 0.75, 0.75]
    assert average_precision(precision, recall).item() == pytest.approx(63.5 / 101)
    assert average_precision(precision[:0], recall[:0]).item() == 0.0


def test_class_mismatch_is_not_a_match():
    box = [[0, 0, 10, 10]]
    m = _evaluate([(box, [0.9], [1], box, [0])], class_names=("car", "bus"))
    assert m["per_class"]["car"].ap50 == 0.0 and m["per_class"]["car"].recall == 0.0
    assert m["per_class"]["bus"].ap50 is None  # no bus GT
    assert m["map50"] == 0.0


def test_greedy_matching_prefers_higher_iou_and_counts_duplicates_as_fp():
    gt = _t([[0, 0, 10, 10]])
    preds = _t([[0, 0, 10, 8], [0, 0, 10, 10]])  # IoU 0.8 (higher score) and IoU 1.0
    correct = match_detections(preds, torch.tensor([0.9, 0.5]), _ids([0, 0]), gt, _ids([0]))
    assert correct[1].all() and not correct[0].any()


def _brute_force_greedy(iou: torch.Tensor, same_class: torch.Tensor, scores: torch.Tensor, thr: float) -> torch.Tensor:
    """Per-threshold greedy over explicit sorted pairs: the slow definition match_detections must equal."""
    pairs = [
        (-iou[i, j].item(), -scores[i].item(), i, j)
        for i in range(iou.shape[0])
        for j in range(iou.shape[1])
        if same_class[i, j] and iou[i, j] >= thr
    ]
    used_p, used_g = set(), set()
    correct = torch.zeros(iou.shape[0], dtype=torch.bool)
    for _, _, i, j in sorted(pairs):
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            correct[i] = True
    return correct


def test_matching_equals_per_threshold_greedy_on_random_scenes():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        n, m = int(torch.randint(1, 12, (1,), generator=gen)), int(torch.randint(1, 8, (1,), generator=gen))
        gt_xy = torch.rand(m, 2, generator=gen) * 40
        gt = torch.cat([gt_xy, gt_xy + 10 + torch.rand(m, 2, generator=gen) * 10], dim=1)
        # predictions jittered around random GT boxes, so that many pairs overlap and compete
        src = gt[torch.randint(0, m, (n,), generator=gen)]
        preds = src + torch.randn(n, 4, generator=gen) * 2.5
        scores = torch.rand(n, generator=gen)
        pc = torch.randint(0, 2, (n,), generator=gen)
        gc = torch.randint(0, 2, (m,), generator=gen)
        got = match_detections(preds, scores, pc, gt, gc)
        iou = box_iou(preds, gt)
        same = pc[:, None] == gc[None, :]
        for t, thr in enumerate(IOU_THRESHOLDS.tolist()):
            assert torch.equal(got[:, t], _brute_force_greedy(iou, same, scores, thr)), (t, thr)


# ------------------------------------------------------------------------------------------------ segmentation
def test_multiclass_stats_iou_and_balanced_accuracy_by_hand():
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [0, 0, 0, 0]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 0], [2, 2, 0, 0], [0, 0, 0, 0]]])
    stats = confusion_stats_multiclass(pred, target, 3)
    # class 1: tp 3, fp 1 (pred 1 at (0,1)), fn 1 (target 1 at (1,3)), tn 11
    assert stats[0, 1].tolist() == [3, 1, 1, 11]
    # class 2: tp 2, fp 0, fn 2, tn 12 ; class 0: tp 7 (of 8), fp 3, fn 1, tn 5
    assert stats[0, 2].tolist() == [2, 0, 2, 12]
    assert stats[0, 0].tolist() == [7, 3, 1, 5]
    iou = iou_score(stats)[0]
    assert iou.tolist() == pytest.approx([7 / 11, 3 / 5, 2 / 4])
    acc = balanced_accuracy(stats)[0]
    assert acc[1].item() == pytest.approx((3 / 4 + 11 / 12) / 2)
    assert acc[2].item() == pytest.approx((2 / 4 + 12 / 12) / 2)


def test_binary_stats_agree_with_multiclass_one_hot():
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (2, 5, 7), generator=gen)
    pred = torch.randint(0, 3, (2, 5, 7), generator=gen)
    one_hot = lambda x: torch.nn.functional.one_hot(x, 3).permute(0, 3, 1, 2).bool()  # noqa: E731
    binary = confusion_stats_binary(one_hot(pred), one_hot(target))
    assert torch.equal(binary, confusion_stats_multiclass(pred, target, 3))


def test_absent_and_unpredicted_class_scores_one():
    target = torch.zeros((1, 2, 2), dtype=torch.int64)
    stats = confusion_stats_multiclass(target, target, 3)  # classes 1 and 2 absent and not predicted
    assert iou_score(stats)[0].tolist() == [1.0, 1.0, 1.0]
    assert balanced_accuracy(stats)[0].tolist() == [1.0, 1.0, 1.0]
    predicted = torch.tensor([[[0, 2], [0, 0]]])
    assert iou_score(confusion_stats_multiclass(predicted, target, 3))[0, 2].item() == 0.0


def test_dataset_wide_and_per_image_iou_differ_as_constructed():
    # Image 1: a 1-pixel lane found exactly (IoU 1). Image 2: a 9-pixel lane missed entirely (IoU 0).
    t1 = torch.zeros((1, 3, 3), dtype=torch.int64)
    t1[0, 0, 0] = 2
    t2 = torch.full((1, 3, 3), 2, dtype=torch.int64)
    acc = SegmentationAccumulator(num_classes=3)
    acc.update(confusion_stats_multiclass(t1.clone(), t1, 3))
    acc.update(confusion_stats_multiclass(torch.zeros_like(t2), t2, 3))
    out = acc.compute(["background", "road", "lane"])
    assert out["lane"]["iou"] == pytest.approx(0.5)  # mean over images of 1 and 0
    assert out["lane"]["iou_dataset"] == pytest.approx(1 / 10)  # 1 tp over 1 tp + 9 fn
    # background: image 1 IoU 1; image 2 predicted 9 bg pixels, no bg target -> IoU 0.
    assert out["background"]["iou"] == pytest.approx(0.5)
    # reference mIoU of lane = mean over images of (IoU_bg + IoU_lane) / 2 = ((1+1)/2 + (0+0)/2) / 2
    assert out["lane"]["miou"] == pytest.approx(0.5)
    # road never present nor predicted: 1 everywhere by the 0/0 convention
    assert out["road"]["iou"] == 1.0 and out["road"]["iou_dataset"] == 1.0
    assert acc.num_images == 2


def test_empty_segmentation_accumulator_is_zero():
    out = SegmentationAccumulator(num_classes=2).compute(["background", "road"])
    assert out["road"] == {"iou": 0.0, "miou": 0.0, "acc": 0.0, "iou_dataset": 0.0}
