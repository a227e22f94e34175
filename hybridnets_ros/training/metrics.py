"""Evaluation metrics of the reference protocol: detection AP/precision/recall and segmentation IoU/accuracy.

Pure torch, vectorised, no model and no I/O. Two accumulators keep per-image statistics only, so a large
validation set at a score threshold of 0.001 does not hold every prediction box in memory.

Detection (the reference's ``val.py`` protocol, §7.5 of the architecture notes):

* Each image's predictions are matched one-to-one to its ground truth of the same class, greedily in descending IoU
  (ties: higher score, then lower prediction index, then lower GT index), at the ten IoU thresholds 0.5:0.05:0.95.
  Greedy matching at a threshold only ever looks at pairs above it, and those come first in the IoU order, so the
  matching at every threshold is the matching at 0.5 restricted to pairs whose IoU reaches the threshold: one matching
  per image serves all ten (``match_detections``). The reference's ``process_batch`` meant the same, but its second
  de-duplication runs on an array no longer sorted by IoU, so it can keep a lower-IoU pair; this module does not.
* AP is the COCO 101-point interpolated AP per class: the mean over recall levels r = 0, 0.01, ..., 1 of the highest
  precision at any recall >= r (0 where recall never reaches r). The reference's yolov5-style code integrates a
  linear interpolation of the same envelope with the trapezoid rule instead; the two differ by well under a point.
* ``precision`` and ``recall`` follow the reference: per class at the confidence that maximises the mean recall,
  which is the lowest one, i.e. over all predictions kept by the evaluation's score threshold (0.001), then averaged
  over classes. ``precision_op``/``recall_op`` are the same at an operating score threshold (a detection counts
  when its score is strictly above it, as in post-processing).

Empty cases (deterministic):

* A class without ground truth in the whole set has no AP, precision or recall (``None`` per class) and is left out
  of the class means; its predictions are still counted in ``num_pred``. When no class has ground truth, every
  detection mean is 0.0 (nothing could be found, so nothing was).
* A class with ground truth but no predictions has AP 0, precision 0 and recall 0. A precision with no prediction
  above the threshold is 0.
* Segmentation ratios 0/0 (e.g. the IoU of a class that is neither predicted nor present in an image) are 1.0:
  there was nothing to find and nothing was wrongly found. This is the smp default (``zero_division=1``) that the
  reference relies on, and it is what makes an image without lane lines and without predicted lanes score lane IoU 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10, dtype=torch.float64)
# 0, 0.01, ..., 1 as exact quotients: a recall of exactly 1/4 meets the level 0.25 (linspace could miss by an ulp).
RECALL_LEVELS = torch.arange(101, dtype=torch.float64) / 100
ZERO_DIVISION = 1.0


# ----------------------------------------------------------------------------------------------------- detection
def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """IoU of every pair, (N, 4) x (M, 4) x1y1x2y2 -> (N, M); degenerate pairs (zero union) give 0."""
    a = boxes_a.to(torch.float64)
    b = boxes_b.to(torch.float64)
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(torch.float64).tiny), torch.zeros_like(inter))


def _greedy_rank(iou: torch.Tensor, candidate: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Rank of every candidate pair in the greedy order (IoU desc, score desc, pred idx, GT idx); others get -1.

    iou, candidate: (N, M); scores: (N,). Returns (N, M) int64 with distinct ranks 0..K-1 on the K candidates.
    """
    pred_idx, gt_idx = candidate.nonzero(as_tuple=True)
    score_rank = torch.empty_like(scores, dtype=torch.int64)
    score_rank[torch.argsort(scores, descending=True, stable=True)] = torch.arange(scores.numel())
    # Stable sorts from the least to the most significant key build the lexicographic order.
    order = torch.argsort(gt_idx, stable=True)
    order = order[torch.argsort(score_rank[pred_idx[order]], stable=True)]
    order = order[torch.argsort(iou[pred_idx[order], gt_idx[order]], descending=True, stable=True)]
    rank = torch.full(iou.shape, -1, dtype=torch.int64)
    rank[pred_idx[order], gt_idx[order]] = torch.arange(order.numel())
    return rank


def match_detections(
    pred_boxes: torch.Tensor,
    pred_scores: torch.Tensor,
    pred_classes: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    iou_thresholds: torch.Tensor = IOU_THRESHOLDS,
) -> torch.Tensor:
    """Which predictions are true positives at each IoU threshold: (N, T) bool.

    pred_boxes (N, 4) and gt_boxes (M, 4) are x1y1x2y2 in the same pixel frame; pred_scores (N,); pred_classes (N,)
    and gt_classes (M,) integer class IDs. One-to-one greedy matching in descending IoU among same-class pairs
    (see the module docstring); a prediction is correct at threshold t when its matched IoU is >= t.
    """
    thresholds = iou_thresholds.to(torch.float64).cpu()
    n, m = pred_boxes.shape[0], gt_boxes.shape[0]
    if n == 0 or m == 0:
        return torch.zeros((n, thresholds.numel()), dtype=torch.bool)
    iou = box_iou(pred_boxes.cpu(), gt_boxes.cpu())
    candidate = (iou >= thresholds.min()) & (pred_classes.cpu().long()[:, None] == gt_classes.cpu().long()[None, :])
    matched_iou = torch.full((n,), -1.0, dtype=torch.float64)
    if candidate.any():
        # Rounds of "mutual best" pairs: the lowest-ranked pair of its row and of its column is one greedy would take
        # (nothing ranked before it uses its prediction or its GT), so each round takes at least the global best and
        # the rounds reproduce greedy exactly, in few vectorised steps instead of a Python loop over pairs.
        unused = torch.iinfo(torch.int64).max
        rank = _greedy_rank(iou, candidate, pred_scores.cpu().to(torch.float64))
        rank = torch.where(rank >= 0, rank, torch.full_like(rank, unused))
        while True:
            row_best, row_arg = rank.min(dim=1)
            live = row_best < unused
            if not live.any():
                break
            col_best = rank.min(dim=0).values
            preds = (live & (col_best[row_arg] == row_best)).nonzero(as_tuple=True)[0]
            gts = row_arg[preds]
            matched_iou[preds] = iou[preds, gts]
            rank[preds, :] = unused
            rank[:, gts] = unused
    return matched_iou[:, None] >= thresholds[None, :]


@dataclass
class DetectionStats:
    """Per-prediction outcomes of a set of images (enough for AP; the boxes themselves are not kept).

    correct (N, T) bool, scores (N,) float32, pred_classes (N,) int64, gt_classes (M,) int64.
    """

    correct: torch.Tensor
    scores: torch.Tensor
    pred_classes: torch.Tensor
    gt_classes: torch.Tensor

    @classmethod
    def empty(cls, num_thresholds: int = IOU_THRESHOLDS.numel()) -> "DetectionStats":
        return cls(
            correct=torch.zeros((0, num_thresholds), dtype=torch.bool),
            scores=torch.zeros(0, dtype=torch.float32),
            pred_classes=torch.zeros(0, dtype=torch.int64),
            gt_classes=torch.zeros(0, dtype=torch.int64),
        )

    @classmethod
    def cat(cls, parts: Sequence["DetectionStats"]) -> "DetectionStats":
        if not parts:
            return cls.empty()
        return cls(
            correct=torch.cat([p.correct for p in parts]),
            scores=torch.cat([p.scores for p in parts]),
            pred_classes=torch.cat([p.pred_classes for p in parts]),
            gt_classes=torch.cat([p.gt_classes for p in parts]),
        )


def image_detection_stats(
    pred_boxes: torch.Tensor,
    pred_scores: torch.Tensor,
    pred_classes: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    iou_thresholds: torch.Tensor = IOU_THRESHOLDS,
) -> DetectionStats:
    """Match one image's predictions (N boxes) to its ground truth (M boxes); shapes as in ``match_detections``."""
    correct = match_detections(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes, iou_thresholds)
    return DetectionStats(
        correct=correct,
        scores=pred_scores.detach().cpu().to(torch.float32).reshape(-1),
        pred_classes=pred_classes.detach().cpu().to(torch.int64).reshape(-1),
        gt_classes=gt_classes.detach().cpu().to(torch.int64).reshape(-1),
    )


def precision_recall_curve(correct: torch.Tensor, num_gt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cumulative precision and recall of predictions already sorted by descending score.

    correct (N, T) bool -> precision (N, T), recall (N, T) float64; with num_gt = 0 the recall is all 0.
    """
    tp = correct.to(torch.float64).cumsum(dim=0)
    seen = torch.arange(1, correct.shape[0] + 1, dtype=torch.float64)[:, None]
    precision = tp / seen
    recall = tp / num_gt if num_gt > 0 else torch.zeros_like(tp)
    return precision, recall


def average_precision(precision: torch.Tensor, recall: torch.Tensor) -> torch.Tensor:
    """COCO 101-point interpolated AP of each column, (N, T) curves -> (T,) float64 (zeros when N = 0).

    Recall must be non-decreasing down each column (predictions in descending score order).
    """
    if precision.shape[0] == 0:
        return torch.zeros(precision.shape[1], dtype=torch.float64)
    # Envelope: the best precision at this or any later (higher-recall) point.
    envelope = precision.flip(0).cummax(dim=0).values.flip(0)
    levels = RECALL_LEVELS.expand(recall.shape[1], -1).contiguous()
    first_reaching = torch.searchsorted(recall.T.contiguous(), levels, right=False)
    reached = first_reaching < precision.shape[0]
    values = torch.gather(envelope.T, 1, first_reaching.clamp(max=precision.shape[0] - 1))
    return torch.where(reached, values, torch.zeros_like(values)).mean(dim=1)


@dataclass
class ClassDetectionMetrics:
    """One class's results; ``None`` where the class has no ground truth (undefined, left out of the means)."""

    num_gt: int
    num_pred: int
    ap50: float | None
    ap50_95: float | None
    precision: float | None
    recall: float | None
    precision_op: float | None
    recall_op: float | None


def _class_metrics(
    correct: torch.Tensor, scores: torch.Tensor, num_gt: int, operating_threshold: float
) -> ClassDetectionMetrics:
    """correct (N, T) and scores (N,) of one class, sorted by descending score."""
    num_pred = int(correct.shape[0])
    if num_gt == 0:
        return ClassDetectionMetrics(0, num_pred, None, None, None, None, None, None)
    precision, recall = precision_recall_curve(correct, num_gt)
    ap = average_precision(precision, recall)
    kept = int((scores > operating_threshold).sum())  # scores are sorted, so the kept ones are a prefix

    def at(count: int) -> tuple[float, float]:
        return (0.0, 0.0) if count == 0 else (float(precision[count - 1, 0]), float(recall[count - 1, 0]))

    p_all, r_all = at(num_pred)
    p_op, r_op = at(kept)
    return ClassDetectionMetrics(num_gt, num_pred, float(ap[0]), float(ap.mean()), p_all, r_all, p_op, r_op)


def detection_metrics(
    stats: DetectionStats, class_names: Sequence[str], operating_threshold: float = 0.25
) -> dict[str, object]:
    """Reference-protocol detection metrics of accumulated ``DetectionStats``.

    Returns ``precision``, ``recall`` (reference protocol: all kept predictions, IoU 0.5), ``precision_op``,
    ``recall_op`` (score > operating_threshold, IoU 0.5), ``map50``, ``map50_95`` (means over classes with ground
    truth), ``num_gt``, ``num_pred`` and ``per_class``: {name: ClassDetectionMetrics}.
    """
    order = torch.argsort(stats.scores, descending=True, stable=True)
    correct, scores, classes = stats.correct[order], stats.scores[order], stats.pred_classes[order]
    gt_counts = torch.bincount(stats.gt_classes, minlength=len(class_names)) if stats.gt_classes.numel() else None
    per_class = {}
    for class_id, name in enumerate(class_names):
        mask = classes == class_id
        num_gt = int(gt_counts[class_id]) if gt_counts is not None else 0
        per_class[name] = _class_metrics(correct[mask], scores[mask], num_gt, operating_threshold)
    defined = [m for m in per_class.values() if m.num_gt > 0]

    def mean(attr: str) -> float:
        return sum(getattr(m, attr) for m in defined) / len(defined) if defined else 0.0

    return {
        "precision": mean("precision"),
        "recall": mean("recall"),
        "precision_op": mean("precision_op"),
        "recall_op": mean("recall_op"),
        "map50": mean("ap50"),
        "map50_95": mean("ap50_95"),
        "num_gt": int(stats.gt_classes.numel()),
        "num_pred": int(stats.scores.numel()),
        "per_class": per_class,
    }


@dataclass
class DetectionAccumulator:
    """Collects ``image_detection_stats`` image by image; memory is ~20 bytes per kept prediction."""

    iou_thresholds: torch.Tensor = field(default_factory=lambda: IOU_THRESHOLDS.clone())
    parts: list[DetectionStats] = field(default_factory=list)

    def update(
        self,
        pred_boxes: torch.Tensor,
        pred_scores: torch.Tensor,
        pred_classes: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_classes: torch.Tensor,
    ) -> None:
        self.parts.append(
            image_detection_stats(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes, self.iou_thresholds)
        )

    def stats(self) -> DetectionStats:
        return DetectionStats.cat(self.parts) if self.parts else DetectionStats.empty(self.iou_thresholds.numel())

    def compute(self, class_names: Sequence[str], operating_threshold: float = 0.25) -> dict[str, object]:
        return detection_metrics(self.stats(), class_names, operating_threshold)


# -------------------------------------------------------------------------------------------------- segmentation
def confusion_stats_multiclass(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-image, per-class one-vs-rest counts of class-ID maps (like smp ``get_stats`` in multiclass mode).

    pred, target: (B, H, W) integer IDs in [0, num_classes). Returns (B, K, 4) int64 [tp, fp, fn, tn].
    """
    b = pred.shape[0]
    k = num_classes
    # One bincount over (image, target, pred) triples builds every per-image confusion matrix at once.
    flat = (torch.arange(b, device=pred.device)[:, None] * (k * k) + target.reshape(b, -1).long() * k
            + pred.reshape(b, -1).long())
    confusion = torch.bincount(flat.reshape(-1), minlength=b * k * k).reshape(b, k, k)  # [image, target, pred]
    tp = confusion.diagonal(dim1=1, dim2=2)
    fp = confusion.sum(dim=1) - tp
    fn = confusion.sum(dim=2) - tp
    tn = pred[0].numel() - tp - fp - fn
    return torch.stack((tp, fp, fn, tn), dim=2)


def confusion_stats_binary(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel counts of boolean masks (multilabel / binary): (B, K, H, W) x2 -> (B, K, 4) int64."""
    pred = pred.bool()
    target = target.bool()
    tp = (pred & target).flatten(2).sum(dim=2)
    fp = (pred & ~target).flatten(2).sum(dim=2)
    fn = (~pred & target).flatten(2).sum(dim=2)
    tn = pred[0, 0].numel() - tp - fp - fn
    return torch.stack((tp, fp, fn, tn), dim=2).long()


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    num = num.to(torch.float64)
    den = den.to(torch.float64)
    return torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, ZERO_DIVISION))


def iou_score(stats: torch.Tensor) -> torch.Tensor:
    """tp / (tp + fp + fn) of (..., 4) counts -> (...) float64; 0/0 -> 1."""
    tp, fp, fn, _ = stats.unbind(-1)
    return _ratio(tp, tp + fp + fn)


def balanced_accuracy(stats: torch.Tensor) -> torch.Tensor:
    """(sensitivity + specificity) / 2 of (..., 4) counts -> (...) float64; each 0/0 ratio -> 1."""
    tp, fp, fn, tn = stats.unbind(-1)
    return (_ratio(tp, tp + fn) + _ratio(tn, tn + fp)) / 2


@dataclass
class SegmentationAccumulator:
    """Per-image averages (the reference) and dataset-wide totals of (B, K, 4) seg stats; constant memory.

    Class 0 is the background; classes 1..K-1 are ``seg_list``.
    """

    num_classes: int
    num_images: int = field(default=0, init=False)
    iou_sum: torch.Tensor = field(init=False)  # (K,) sum over images of the per-image IoU
    miou_sum: torch.Tensor = field(init=False)  # (K,) sum over images of (IoU_bg + IoU_k) / 2
    acc_sum: torch.Tensor = field(init=False)  # (K,) sum over images of the balanced accuracy
    totals: torch.Tensor = field(init=False)  # (K, 4) counts summed over images

    def __post_init__(self) -> None:
        k = self.num_classes
        self.iou_sum = torch.zeros(k, dtype=torch.float64)
        self.miou_sum = torch.zeros(k, dtype=torch.float64)
        self.acc_sum = torch.zeros(k, dtype=torch.float64)
        self.totals = torch.zeros((k, 4), dtype=torch.int64)

    def update(self, stats: torch.Tensor) -> None:
        """stats: (B, K, 4) int counts of B images."""
        stats = stats.detach().cpu().long()
        iou = iou_score(stats)
        self.num_images += stats.shape[0]
        self.iou_sum += iou.sum(dim=0)
        self.miou_sum += ((iou[:, :1] + iou) / 2).sum(dim=0)
        self.acc_sum += balanced_accuracy(stats).sum(dim=0)
        self.totals += stats.sum(dim=0)

    def compute(self, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
        """{name: {iou, miou, acc, iou_dataset}} for every class ``class_names`` (K names, background first).

        With no image at all every value is 0.0.
        """
        n = self.num_images
        dataset_iou = iou_score(self.totals)
        result = {}
        for k, name in enumerate(class_names):
            result[name] = {
                "iou": float(self.iou_sum[k] / n) if n else 0.0,
                "miou": float(self.miou_sum[k] / n) if n else 0.0,
                "acc": float(self.acc_sum[k] / n) if n else 0.0,
                "iou_dataset": float(dataset_iou[k]) if n else 0.0,
            }
        return result
