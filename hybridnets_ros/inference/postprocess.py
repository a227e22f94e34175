"""Per-frame results in original image pixels: the predictor's detections and class maps un-letterboxed.

Detections (network-input pixels, from :meth:`HybridNetsPredictor.detect
<hybridnets_ros.inference.predictor.HybridNetsPredictor.detect>`) are mapped back through each frame's letterbox.
Segmentation: the class-ID map at network resolution (:func:`~hybridnets_ros.inference.predictor.seg_class_map`)
has its padding cropped on the outputs' device and is resized (nearest) to the original size on the host; the
per-pixel confidence is computed only when asked for.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from hybridnets_ros.conventions import SEG_MODES
from hybridnets_ros.inference.letterbox import Letterbox
from hybridnets_ros.inference.predictor import DetectionBatch, seg_class_map


@dataclass
class Detections:
    """Detections of one image: boxes (N,4) float32 x1y1x2y2 original px, scores (N,) float32, class_ids (N,) int64,
    sorted by descending score."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class SegConfidence:
    """Per-pixel confidence of one frame's segmentation, computed only when asked for.

    ``logits`` (S,h,w) is a copy of the frame's segmentation logits with the letterbox padding cropped off.
    """

    logits: torch.Tensor
    seg_mode: str
    orig_hw: tuple[int, int]

    def image(self) -> np.ndarray:
        """(h0,w0) uint8: 255 x the probability of the class the mask shows at each pixel (same resize as the mask)."""
        scaled = torch.round(seg_class_probability(self.logits[None], self.seg_mode)[0] * 255).to(torch.uint8)
        h0, w0 = self.orig_hw
        return cv2.resize(scaled.cpu().numpy(), (w0, h0), interpolation=cv2.INTER_NEAREST)

    def at(self, flat_index: np.ndarray) -> np.ndarray:
        """(N,) float32 probability at original pixels ``row * w0 + col`` (N,), from those pixels' logits only."""
        h, w = self.logits.shape[-2:]
        h0, w0 = self.orig_hw
        rows, cols = np.divmod(np.asarray(flat_index, np.int64), w0)
        # The mask's nearest-neighbour rule: source index = floor(destination index * source / destination size).
        source = np.minimum(rows * h // h0, h - 1) * w + np.minimum(cols * w // w0, w - 1)
        picked = self.logits.reshape(self.logits.shape[0], -1)[:, torch.from_numpy(source).to(self.logits.device)]
        return seg_class_probability(picked[None, :, :, None], self.seg_mode)[0, :, 0].cpu().numpy()


@dataclass
class FrameResult:
    """Everything inferred for one frame. ``seg_mask`` (h0,w0) uint8: 0 background, k = seg_list[k-1]."""

    detections: Detections
    seg_mask: np.ndarray
    letterbox: Letterbox
    seg_confidence: SegConfidence | None = None


def detections_to_orig(selected: DetectionBatch, letterboxes: Sequence[Letterbox]) -> list[Detections]:
    """The predictor's detections (network-input pixels, padded) -> per letterbox, Detections in its original image
    pixels (numpy), without the padding rows."""
    boxes = [lb.boxes_to_orig(selected.boxes[b]) for b, lb in enumerate(letterboxes)]
    counts = selected.counts.tolist()
    return [
        Detections(
            boxes=boxes[b][:m].cpu().numpy().astype(np.float32, copy=False),
            scores=selected.scores[b, :m].cpu().numpy().astype(np.float32, copy=False),
            class_ids=selected.class_ids[b, :m].cpu().numpy().astype(np.int64, copy=False),
        )
        for b, m in enumerate(counts)
    ]


def seg_class_probability(segmentation: torch.Tensor, seg_mode: str) -> torch.Tensor:
    """(B,S,H,W) logits -> (B,H,W) float32 probability of the class :func:`seg_class_map` picks at each pixel.

    multiclass: softmax of the winning channel. binary: sigmoid, or 1 - sigmoid where the pixel is background.
    multilabel: sigmoid of the winning class, or where none is on, the probability that the likeliest one is off.
    """
    logits = segmentation.to(torch.float32)
    if seg_mode == "multiclass":
        return torch.softmax(logits, dim=1).amax(dim=1)  # the fused softmax is several times faster on CPU
    if seg_mode == "binary":
        return torch.sigmoid(logits[:, 0].abs())
    if seg_mode == "multilabel":
        probability = torch.sigmoid(logits[:, 1:])
        class_map = seg_class_map(segmentation, seg_mode).long()
        chosen = probability.gather(1, (class_map - 1).clamp(min=0)[:, None])[:, 0]
        return torch.where(class_map > 0, chosen, 1.0 - probability.amax(dim=1))
    raise ValueError(f"unknown seg_mode '{seg_mode}': expected one of {SEG_MODES}")


def seg_confidences(segmentation: torch.Tensor, seg_mode: str,
                    letterboxes: Sequence[Letterbox]) -> list[SegConfidence]:
    """Per image, the cropped logits (copied, so a backend may reuse its output buffer) for a later confidence."""
    return [SegConfidence(lb.crop_padding(segmentation[i]).clone(), seg_mode, lb.orig_hw)
            for i, lb in enumerate(letterboxes)]


def segment(segmentation: torch.Tensor, seg_mode: str, letterboxes: Sequence[Letterbox]) -> list[np.ndarray]:
    """(B,S,H,W) logits -> per image (h0,w0) uint8 class-ID masks in original pixels.

    Class IDs and the padding crop are computed on the device at network resolution; only the cropped maps travel to
    the host, where one cv2 ``INTER_NEAREST`` resize per image (the same floor rule as :func:`resize_nearest`, and
    far faster than a gather on CPU) brings them to the original size.
    """
    class_map = seg_class_map(segmentation, seg_mode)
    masks: list[np.ndarray | None] = [None] * len(letterboxes)
    groups: dict[Letterbox, list[int]] = {}
    for i, lb in enumerate(letterboxes):
        groups.setdefault(lb, []).append(i)
    for lb, members in groups.items():
        index = torch.tensor(members, device=class_map.device)
        cropped = lb.crop_padding(class_map.index_select(0, index)).cpu().numpy()
        h0, w0 = lb.orig_hw
        for j, i in enumerate(members):
            masks[i] = cv2.resize(cropped[j], (w0, h0), interpolation=cv2.INTER_NEAREST)
    return masks
