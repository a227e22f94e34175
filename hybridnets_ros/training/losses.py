"""Training losses of HybridNets, as the reference defines them, vectorised over the batch.

Detection (``DetectionLoss``): focal loss on the classifier's probabilities plus smooth-L1 on the box deltas.
Each anchor is matched to the ground-truth box of highest IoU; it is positive when (GT area > 100 px² and IoU >= 0.5)
or (GT area <= 100 px² and IoU >= 0.15), otherwise negative (no ignore band). Per image the class loss is the focal
sum over anchors and classes divided by max(1, #positives); the box loss is the smooth-L1 (beta 1/9) mean over the
positives' (dy, dx, dh, dw); images without boxes contribute only the negative focal term. Both are averaged over the
batch and the box loss is scaled by 50.

Segmentation (``SegmentationLoss``): Tversky loss (alpha 0.7 on false positives, beta 0.3 on false negatives,
focal exponent 4/3, classes absent from the batch's ground truth zeroed) plus a sigmoid focal loss (alpha 0.25,
gamma 2), both from logits, in binary, multiclass (softmax) or multilabel mode.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from hybridnets_ros.conventions import SEG_MODES
from hybridnets_ros.inference.box_coder import encode_boxes

SMALL_BOX_AREA = 100.0      # px², boundary between the two positive-IoU thresholds
POSITIVE_IOU = 0.5
SMALL_POSITIVE_IOU = 0.15
REGRESSION_WEIGHT = 50.0


class LossTerms(NamedTuple):
    """Scalar loss terms; a term that was not computed (frozen head) is None."""

    classification: Tensor | None
    regression: Tensor | None
    segmentation: Tensor | None

    def total(self) -> Tensor:
        terms = [t for t in self if t is not None]
        if not terms:
            raise ValueError("no loss term was computed: every head is frozen")
        return torch.stack(terms).sum()

    def as_floats(self) -> dict[str, float]:
        """Detached python numbers of the computed terms, keyed cls/reg/seg."""
        names = ("cls", "reg", "seg")
        return {name: float(t.detach()) for name, t in zip(names, self) if t is not None}


def anchor_box_iou(anchors: Tensor, boxes: Tensor) -> Tensor:
    """IoU of every anchor with every box.

    anchors (N,4) y1,x1,y2,x2; boxes (B,M,4) x1,y1,x2,y2 -> (B,N,M).
    """
    ay1, ax1, ay2, ax2 = anchors.unbind(-1)
    anchor_area = (ay2 - ay1) * (ax2 - ax1)
    bx1, by1, bx2, by2 = (c.unsqueeze(1) for c in boxes.unbind(-1))  # (B,1,M)
    inter_w = (torch.minimum(ax2[:, None], bx2) - torch.maximum(ax1[:, None], bx1)).clamp(min=0)
    inter_h = (torch.minimum(ay2[:, None], by2) - torch.maximum(ay1[:, None], by1)).clamp(min=0)
    inter = inter_w * inter_h
    union = (anchor_area[:, None] + (bx2 - bx1) * (by2 - by1) - inter).clamp(min=1e-8)
    return inter / union


def match_anchors(anchors: Tensor, annotations: Tensor) -> tuple[Tensor, Tensor]:
    """Assign each anchor its best ground truth and decide positives.

    anchors (N,4) y1x1y2x2; annotations (B,M,5) x1,y1,x2,y2,cls with cls -1 for padding.
    Returns positive (B,N) bool and assigned (B,N,5): the matched annotation of every anchor (meaningful where
    positive).
    """
    batch, num_anchors = annotations.shape[0], anchors.shape[0]
    if annotations.shape[1] == 0:
        empty = annotations.new_zeros(batch, num_anchors, 5)
        return torch.zeros(batch, num_anchors, dtype=torch.bool, device=anchors.device), empty
    valid = annotations[..., 4] >= 0  # (B,M)
    iou = anchor_box_iou(anchors, annotations[..., :4])
    iou = iou.masked_fill(~valid[:, None, :], -1.0)
    iou_max, best = iou.max(dim=2)  # (B,N)
    assigned = torch.gather(annotations, 1, best[..., None].expand(-1, -1, 5))
    area = (assigned[..., 2] - assigned[..., 0]) * (assigned[..., 3] - assigned[..., 1])
    large = area > SMALL_BOX_AREA
    positive = (large & (iou_max >= POSITIVE_IOU)) | (~large & (iou_max >= SMALL_POSITIVE_IOU))
    return positive, assigned


def focal_loss_probs(probs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise binary focal loss on probabilities clamped to [1e-4, 1-1e-4]; same shape as the inputs."""
    probs = probs.clamp(1e-4, 1.0 - 1e-4)
    is_pos = targets == 1
    alpha_factor = torch.where(is_pos, alpha, 1.0 - alpha)
    focal_weight = torch.where(is_pos, 1.0 - probs, probs)
    bce = -(targets * torch.log(probs) + (1.0 - targets) * torch.log(1.0 - probs))
    return alpha_factor * focal_weight.pow(gamma) * bce


def smooth_l1(diff: Tensor, beta: float = 1.0 / 9.0) -> Tensor:
    diff = diff.abs()
    return torch.where(diff <= beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


class DetectionLoss(torch.nn.Module):
    """Focal classification + smooth-L1 regression; see the module docstring for the exact definition."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, regression_weight: float = REGRESSION_WEIGHT) -> None:
        super().__init__()
        self.alpha, self.gamma, self.regression_weight = alpha, gamma, regression_weight

    def forward(
        self, classification: Tensor, regression: Tensor, anchors: Tensor, annotations: Tensor
    ) -> tuple[Tensor, Tensor]:
        """classification (B,N,C) probabilities; regression (B,N,4) dy,dx,dh,dw; anchors (N,4) y1x1y2x2;
        annotations (B,M,5) network-input px, cls -1 = padding. Returns (cls_loss, reg_loss) scalars."""
        classification = classification.float()
        regression = regression.float()
        anchors = anchors.to(device=classification.device, dtype=torch.float32)
        annotations = annotations.to(device=classification.device, dtype=torch.float32)
        positive, assigned = match_anchors(anchors, annotations)
        num_pos = positive.sum(dim=1)  # (B,)

        targets = torch.zeros_like(classification)
        classes = assigned[..., 4].long().clamp(min=0)
        targets.scatter_(2, classes[..., None], positive[..., None].to(targets.dtype))
        cls_per_image = focal_loss_probs(classification, targets, self.alpha, self.gamma).sum(dim=(1, 2))
        cls_loss = (cls_per_image / num_pos.clamp(min=1)).mean()

        deltas = encode_boxes(anchors, assigned[..., :4])  # GT sides clamped at 1 px like the reference
        reg_elem = smooth_l1(deltas - regression) * positive[..., None]
        reg_per_image = reg_elem.sum(dim=(1, 2)) / (4 * num_pos).clamp(min=1)
        reg_loss = reg_per_image.mean() * self.regression_weight
        return cls_loss, reg_loss


def seg_target_one_hot(target: Tensor, mode: str, channels: int) -> Tensor:
    """The target as float (B,C,H,W) channels matching the logits.

    multiclass: (B,H,W) class IDs -> one-hot over C channels; binary: (B,1,H,W) or (B,H,W) 0/1;
    multilabel: (B,C,H,W) 0/1 already.
    """
    if mode == "multiclass":
        if target.dim() != 3:
            raise ValueError(f"multiclass segmentation target must be (B,H,W) class IDs, got {tuple(target.shape)}")
        return F.one_hot(target.long(), channels).permute(0, 3, 1, 2).float()
    if mode == "binary" and target.dim() == 3:
        target = target[:, None]
    if target.shape[1] != channels:
        raise ValueError(f"{mode} segmentation target has {target.shape[1]} channels but the logits have {channels}")
    return target.float()


def tversky_loss(probs: Tensor, target: Tensor, alpha: float, beta: float, gamma: float, eps: float = 1e-7) -> Tensor:
    """probs, target (B,C,H,W) -> scalar mean over classes of (1 - Tversky index), to the power gamma.

    The index of each class is computed over the batch and all pixels; classes absent from the target contribute 0.
    """
    dims = (0, 2, 3)
    true_pos = (probs * target).sum(dims)
    false_pos = (probs * (1.0 - target)).sum(dims)
    false_neg = ((1.0 - probs) * target).sum(dims)
    index = true_pos / (true_pos + alpha * false_pos + beta * false_neg).clamp(min=eps)
    present = (target.sum(dims) > 0).to(probs.dtype)
    return ((1.0 - index) * present).mean().pow(gamma)


def focal_loss_logits(logits: Tensor, target: Tensor, alpha: float, gamma: float, sum_channels: bool) -> Tensor:
    """(B,C,H,W) logits and 0/1 target -> scalar binary focal loss.

    ``sum_channels``: the per-channel means are summed (multiclass, one binary problem per class); otherwise the mean
    over every element is taken (binary, multilabel).
    """
    log_loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = torch.exp(-log_loss)
    loss = (1.0 - p_true).pow(gamma) * log_loss * (alpha * target + (1.0 - alpha) * (1.0 - target))
    return loss.mean(dim=(0, 2, 3)).sum() if sum_channels else loss.mean()


class SegmentationLoss(torch.nn.Module):
    """Tversky + focal from logits, for one of ``binary``, ``multiclass``, ``multilabel``."""

    def __init__(
        self,
        mode: str,
        tversky_alpha: float = 0.7,
        tversky_beta: float = 0.3,
        tversky_gamma: float = 4.0 / 3.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if mode not in SEG_MODES:
            raise ValueError(f"segmentation mode must be one of {list(SEG_MODES)}, got {mode!r}")
        self.mode = mode
        self.tversky_alpha, self.tversky_beta, self.tversky_gamma = tversky_alpha, tversky_beta, tversky_gamma
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """logits (B,C,H,W); target per ``seg_target_one_hot``. Returns a scalar."""
        logits = logits.float()
        one_hot = seg_target_one_hot(target.to(logits.device), self.mode, logits.shape[1])
        multiclass = self.mode == "multiclass"
        probs = logits.softmax(dim=1) if multiclass else logits.sigmoid()
        tversky = tversky_loss(probs, one_hot, self.tversky_alpha, self.tversky_beta, self.tversky_gamma)
        focal = focal_loss_logits(logits, one_hot, self.focal_alpha, self.focal_gamma, sum_channels=multiclass)
        return tversky + focal


class HybridNetsLoss(torch.nn.Module):
    """All loss terms of a forward pass; heads switched off (frozen) are not computed at all."""

    def __init__(self, seg_mode: str, compute_det: bool = True, compute_seg: bool = True) -> None:
        super().__init__()
        self.compute_det, self.compute_seg = compute_det, compute_seg
        self.det = DetectionLoss()
        self.seg = SegmentationLoss(seg_mode)

    def forward(self, regression: Tensor, classification: Tensor, segmentation: Tensor, anchors: Tensor,
                annotations: Tensor, seg_target: Tensor) -> LossTerms:
        cls_loss = reg_loss = seg_loss = None
        if self.compute_det:
            cls_loss, reg_loss = self.det(classification, regression, anchors, annotations)
        if self.compute_seg:
            seg_loss = self.seg(segmentation, seg_target)
        return LossTerms(cls_loss, reg_loss, seg_loss)
