"""The model's input/output convention, owned by one module: what goes into the network and how its raw heads
become detections and a segmentation class map, in network-input pixels.

:class:`HybridNetsPredictor` holds the anchors (generated once from the model config), the normalisation mean/std,
the seg mode and the detection thresholds. The pipeline (whatever backend produced the raw heads), training
evaluation and the overlays call its methods, and the post-processed ONNX file is the export of its ``forward``:

* input ``images`` (B,3,H,W) uint8 RGB, letterboxed to the network input;
* ``detections`` (B,K,6) float32 rows ``[x1, y1, x2, y2, score, class_id]`` in network-input pixels, by descending
  score; rows ``>= num_detections[b]`` are zeros; K = min(max_detections, pre_nms_top_k, number of anchors);
* ``num_detections`` (B,) int64;
* ``seg_classes`` (B,H,W) uint8 class IDs (0 background, k = seg_list[k-1]).

Detection is one algorithm: score = best class per anchor, candidates strictly above the score threshold capped to
the ``pre_nms_top_k`` best, decoded against the anchors, clipped to the input, class-aware greedy NMS (strict IoU),
the ``max_detections`` best survivors. Where a graph is being captured (ONNX export, tracing, compiling), the
eager-only shortcuts take their static form, as torchvision's detection heads do: the candidate cap is the fixed
``pre_nms_top_k`` instead of the number of passing scores (candidates below the threshold are never kept either
way), NMS is the ``NonMaxSuppression`` op (:func:`~hybridnets_ros.inference.nms.onnx_non_max_suppression`) instead
of :func:`~hybridnets_ros.inference.nms.batched_nms`, and the final ranking is ``TopK`` (which ranks equal scores by
position) instead of a stable sort.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hybridnets_ros.conventions import SEG_MODES, DetectionThresholds
from hybridnets_ros.inference.box_coder import clip_boxes, decode_boxes
from hybridnets_ros.inference.nms import batched_nms, onnx_non_max_suppression
from hybridnets_ros.model.anchors import generate_anchors
from hybridnets_ros.model.config import ModelConfig

# Score of what is not a detection: (anchor, class) pairs that are not the anchor's best class, and NMS losers.
# Below any valid threshold (>= 0), so neither NMS nor the final ranking ever picks them.
_NOT_DETECTED = -1.0


class DetectionBatch(NamedTuple):
    """Detections of B images in network-input pixels, K rows per image by descending score; rows
    ``>= counts[b]`` are zeros. boxes (B,K,4) float32 x1y1x2y2, scores (B,K) float32, class_ids (B,K) int64,
    counts (B,) int64."""

    boxes: torch.Tensor
    scores: torch.Tensor
    class_ids: torch.Tensor
    counts: torch.Tensor

    def rows(self) -> torch.Tensor:
        """(B,K,6) float32 ``[x1, y1, x2, y2, score, class_id]`` (the exported ``detections``)."""
        return torch.cat([self.boxes, self.scores.unsqueeze(-1), self.class_ids.to(torch.float32).unsqueeze(-1)], -1)

    def image(self, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image ``b``'s detections without padding: boxes (M,4), scores (M,), class_ids (M,)."""
        m = int(self.counts[b])
        return self.boxes[b, :m], self.scores[b, :m], self.class_ids[b, :m]


def graph_capture() -> bool:
    """True while a graph is being captured (ONNX export, ``torch.jit.trace``, ``torch.export``/``torch.compile``):
    data-dependent Python shortcuts must then give way to static operations."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_compiling()


def channel_statistics(config: ModelConfig, device: torch.device | str | None = None) -> tuple[torch.Tensor, ...]:
    """The config's normalisation (mean, std), each (1,3,1,1) float32."""
    return tuple(torch.tensor(values, dtype=torch.float32, device=device).view(1, 3, 1, 1)
                 for values in (config.mean, config.std))


def normalize_images(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) uint8 RGB (or float 0..255) -> float32 ``(x / 255 - mean) / std``, a new tensor.

    The operation order of ToTensor + Normalize, so the network sees bit-identical input to the reference.
    """
    return images.to(torch.float32, copy=True).div_(255).sub_(mean).div_(std)


def seg_class_map(segmentation: torch.Tensor, seg_mode: str) -> torch.Tensor:
    """(B,S,H,W) logits -> (B,H,W) uint8 class IDs at network resolution.

    multiclass: argmax over channels (channel 0 = background). binary: 1 where the single logit >= 0.
    multilabel: channel 0 is background; class k is on where sigmoid(logit k) >= 0.5, later classes win overlaps.
    """
    if seg_mode == "multiclass":
        # torch.max like the reference (its tie rule), and on CPU it is far faster than argmax over dim 1.
        return segmentation.max(dim=1).indices.to(torch.uint8)
    if seg_mode == "binary":
        return (segmentation[:, 0] >= 0).to(torch.uint8)
    if seg_mode == "multilabel":
        on = torch.sigmoid(segmentation[:, 1:].to(torch.float32)) >= 0.5
        ids = torch.arange(1, segmentation.shape[1], device=segmentation.device, dtype=torch.uint8)
        return (on * ids[None, :, None, None]).amax(dim=1)
    raise ValueError(f"unknown seg_mode '{seg_mode}': expected one of {SEG_MODES}")


def _top(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of each row (B,n), equal values ranked by position.

    ONNX TopK specifies that order; torch.topk leaves ties unordered, so eager torch sorts stably instead (the
    exporters cannot translate a stable sort).
    """
    if graph_capture():
        return values.topk(k, dim=1)
    values, index = values.sort(dim=1, descending=True, stable=True)
    return values[:, :k], index[:, :k]


def _most_passing(scores: torch.Tensor, score_threshold: float) -> int:
    """The largest number of scores (B,N) above the threshold in one image (0 for an empty batch)."""
    return int((scores > score_threshold).sum(dim=1).max()) if scores.shape[0] else 0


def _best_kept(boxes: torch.Tensor, scores: torch.Tensor, class_ids: torch.Tensor, kept: torch.Tensor,
               rows: int) -> DetectionBatch:
    """The ``rows`` best kept candidates per image by descending score, zero-padded: boxes (B,k,4), scores (B,k),
    class_ids (B,k), kept (B,k) bool. Fewer candidates than rows (eager only) are padded to ``rows``."""
    ranked = torch.where(kept, scores, torch.full_like(scores, _NOT_DETECTED))
    top_scores, index = _top(ranked, min(rows, scores.shape[1]))
    valid = top_scores > _NOT_DETECTED
    out_boxes = torch.gather(boxes, 1, index.unsqueeze(-1).expand(-1, -1, 4))
    out_boxes = torch.where(valid.unsqueeze(-1), out_boxes, torch.zeros_like(out_boxes))
    out_scores = torch.where(valid, top_scores, torch.zeros_like(top_scores))
    out_classes = torch.gather(class_ids, 1, index)
    out_classes = torch.where(valid, out_classes, torch.zeros_like(out_classes))
    pad = rows - index.shape[1]
    if pad:
        out_boxes, out_scores, out_classes = (F.pad(out_boxes, (0, 0, 0, pad)), F.pad(out_scores, (0, pad)),
                                              F.pad(out_classes, (0, pad)))
    return DetectionBatch(out_boxes, out_scores, out_classes, valid.sum(dim=1))


class HybridNetsPredictor(nn.Module):
    """Pre- and post-processing of one model config around an optional ``network`` (needed by :meth:`forward`).

    Buffers (not saved, they follow ``.to(device)``): ``anchors`` (N,4) y1x1y2x2 input pixels, ``mean`` and ``std``
    (1,3,1,1). ``thresholds`` are the default of :meth:`detect` and what :meth:`forward` (hence an export) uses.
    """

    def __init__(self, config: ModelConfig, thresholds: DetectionThresholds | None = None,
                 network: nn.Module | None = None) -> None:
        super().__init__()
        if config.seg_mode not in SEG_MODES:
            raise ValueError(f"unknown seg_mode '{config.seg_mode}': expected one of {SEG_MODES}")
        self.network = network
        self.input_hw = tuple(int(v) for v in config.input_size)
        self.seg_mode = config.seg_mode
        self.num_classes = config.num_classes
        self.thresholds = thresholds if thresholds is not None else DetectionThresholds()
        self.thresholds.validate()
        self.register_buffer("anchors", generate_anchors(config, self.input_hw), persistent=False)
        mean, std = channel_statistics(config)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) letterboxed uint8 RGB (or float 0..255) on this module's device -> the network input."""
        return normalize_images(images, self.mean, self.std)

    def segment(self, segmentation: torch.Tensor) -> torch.Tensor:
        """(B,S,H,W) logits -> (B,H,W) uint8 class IDs by this config's seg mode (:func:`seg_class_map`)."""
        return seg_class_map(segmentation, self.seg_mode)

    def detect(self, regression: torch.Tensor, classification: torch.Tensor,
               thresholds: DetectionThresholds | None = None) -> DetectionBatch:
        """regression (B,N,4) dy,dx,dh,dw; classification (B,N,C) probabilities -> detections in input pixels.

        ``thresholds`` default to the predictor's own; the steps are in the module docstring.
        """
        t = thresholds if thresholds is not None else self.thresholds
        t.validate()
        scores, class_ids = classification.to(torch.float32).max(dim=-1)
        static_k = min(t.pre_nms_top_k, scores.shape[1])
        rows = min(t.max_detections, static_k)
        # NMS costs O(k^2): eagerly, take no more candidates than the image with the most passing scores has.
        k = static_k if graph_capture() else min(static_k, _most_passing(scores, t.score_threshold))
        top_scores, top_idx = scores.topk(k, dim=1)
        deltas = torch.gather(regression.to(torch.float32), 1, top_idx.unsqueeze(-1).expand(-1, -1, 4))
        boxes = clip_boxes(decode_boxes(self.anchors[top_idx], deltas), self.input_hw)
        top_classes = torch.gather(class_ids, 1, top_idx)
        kept = self._nms(boxes, top_scores, top_classes, t, rows)
        return _best_kept(boxes, top_scores, top_classes, kept, rows)

    def _nms(self, boxes: torch.Tensor, scores: torch.Tensor, class_ids: torch.Tensor, t: DetectionThresholds,
             max_per_class: int) -> torch.Tensor:
        """(B,k) bool: which candidates (boxes (B,k,4), scores (B,k), class_ids (B,k)) pass the score threshold and
        survive class-aware NMS."""
        # ONNX NMS puts each box's corners in order itself, while box_iou gives an inverted box (an anchor decoded
        # outside the image, then clipped) no overlap with anything: collapsed to zero area, both decide alike.
        nms_boxes = torch.cat([boxes[..., :2], torch.maximum(boxes[..., 2:], boxes[..., :2])], dim=-1)
        if graph_capture():
            # Class-aware through the op's class dimension: each box scores only in its own class.
            classes = torch.arange(self.num_classes, device=scores.device).view(1, -1, 1)
            class_scores = torch.where(classes == class_ids.unsqueeze(1), scores.unsqueeze(1),
                                       torch.full_like(scores, _NOT_DETECTED).unsqueeze(1))  # (B,C,k)
            selected = onnx_non_max_suppression(nms_boxes, class_scores, max_per_class, t.nms_iou_threshold,
                                                t.score_threshold)
            return torch.zeros_like(scores, dtype=torch.bool).index_put(
                (selected[:, 0], selected[:, 2]), torch.ones_like(selected[:, 0], dtype=torch.bool))
        order, keep = batched_nms(nms_boxes, scores, class_ids, t.nms_iou_threshold, scores > t.score_threshold)
        return torch.zeros_like(keep).scatter(1, order, keep)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Letterboxed uint8 images (B,3,H,W) -> (detections (B,K,6), num_detections (B,), seg_classes (B,H,W)),
        the post-processed ONNX convention (module docstring), with this predictor's thresholds."""
        if self.network is None:
            raise RuntimeError("HybridNetsPredictor.forward needs the network: construct it with network=model")
        out = self.network(self.normalize(images))
        detections = self.detect(out.regression, out.classification)
        return detections.rows(), detections.counts, self.segment(out.segmentation)
