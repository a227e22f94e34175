"""Export wrappers: the network alone (raw heads) or the network with its post-processing in the graph.

The post-processed wrapper takes the letterboxed uint8 image and returns final detections and the segmentation
class map, so a consumer of the ONNX file needs nothing HybridNets-specific beyond letterboxing and its inverse:

* input ``images`` (B,3,H,W) uint8 RGB, letterboxed to the network input (pad value 114);
* ``detections`` (B,K,6) float32 rows ``[x1, y1, x2, y2, score, class_id]`` in network-input pixels, by descending
  score; rows ``>= num_detections[b]`` are zeros (padding);
* ``num_detections`` (B,) int64;
* ``seg_classes`` (B,H,W) uint8 class IDs (0 background, k = seg_list[k-1]).

NMS is the ONNX ``NonMaxSuppression`` op. In torch it is the custom op ``hybridnets_export::non_max_suppression``
with the same semantics (class-aware through the class dimension of ``scores``, strict score and IoU thresholds),
computed eagerly with :func:`hybridnets_ros.inference.nms.batched_nms` so the wrapper also runs (and traces) in
torch; both exporters translate it to the ONNX op.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.onnx import symbolic_helper

from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.inference.box_coder import clip_boxes, decode_boxes
from hybridnets_ros.inference.nms import batched_nms
from hybridnets_ros.inference.postprocess import seg_class_map
from hybridnets_ros.model.anchors import generate_anchors
from hybridnets_ros.model.config import ModelConfig

RAW_INPUTS = ("images",)
RAW_OUTPUTS = ("regression", "classification", "segmentation")
POSTPROCESSED_INPUTS = ("images",)
POSTPROCESSED_OUTPUTS = ("detections", "num_detections", "seg_classes")
LETTERBOX_PAD_VALUE = 114
NMS_OPSET = 10  # NonMaxSuppression exists from opset 10; the symbolic is valid for every later opset
# Score given to (anchor, class) pairs that are not the anchor's best class: below any valid threshold (>= 0), so
# NMS never selects them, which makes NMS see one class per anchor as the torch pipeline does.
_NOT_BEST_CLASS = -1.0


@torch.library.custom_op("hybridnets_export::non_max_suppression", mutates_args=())
def non_max_suppression(
    boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_threshold: float, score_threshold: float
) -> torch.Tensor:
    """ONNX ``NonMaxSuppression`` (center_point_box=0) in torch.

    boxes (B,N,4) x1y1x2y2; scores (B,C,N). Per image and class, boxes with score > ``score_threshold`` are visited
    by descending score and kept unless a kept box has IoU > ``iou_threshold``; at most ``max_per_class`` per class.
    Returns (M,3) int64 rows ``[batch, class, box]``, by image, class, then descending score.
    """
    batch, num_classes, num_boxes = scores.shape
    rows = []
    for c in range(num_classes):
        class_scores = scores[:, c]
        same_class = torch.zeros((batch, num_boxes), dtype=torch.int64, device=scores.device)
        order, keep = batched_nms(boxes, class_scores, same_class, iou_threshold, class_scores > score_threshold)
        keep &= keep.cumsum(dim=1) <= max_per_class
        image, rank = keep.nonzero(as_tuple=True)
        box = order[image, rank]
        rows.append(torch.stack([image, torch.full_like(image, c), box], dim=1))
    selected = torch.cat(rows)
    # Stable sort by image keeps the (class, score) order within each image.
    return selected[torch.sort(selected[:, 0], stable=True).indices]


@non_max_suppression.register_fake
def _non_max_suppression_fake(
    boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_threshold: float, score_threshold: float
) -> torch.Tensor:
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count, 3), dtype=torch.int64)


@symbolic_helper.parse_args("v", "v", "i", "f", "f")
def _nms_symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):  # noqa: ANN001, ANN202
    """TorchScript-exporter translation of the custom op to ``NonMaxSuppression``."""
    return g.op(
        "NonMaxSuppression",
        boxes,
        scores,
        g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64)),
        g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32)),
        g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32)),
    )


torch.onnx.register_custom_op_symbolic("hybridnets_export::non_max_suppression", _nms_symbolic, NMS_OPSET)


def dynamo_translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``: the custom op -> ``NonMaxSuppression``."""
    from onnxscript import opset18 as op

    def nms_onnx(boxes, scores, max_per_class: int, iou_threshold: float,  # noqa: ANN001, ANN202
                 score_threshold: float):
        return op.NonMaxSuppression(
            boxes,
            scores,
            op.Constant(value_ints=[max_per_class]),
            op.Constant(value_floats=[iou_threshold]),
            op.Constant(value_floats=[score_threshold]),
        )

    return {torch.ops.hybridnets_export.non_max_suppression.default: nms_onnx}


def _top(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of each row, equal values ranked by position (as the pipeline's stable sort ranks them).

    ONNX TopK specifies exactly that order; torch.topk leaves ties unordered, so eager torch sorts stably instead
    (the exporters cannot translate a stable sort, hence the two paths).
    """
    if torch.onnx.is_in_onnx_export():
        return values.topk(k, dim=1)
    values, index = values.sort(dim=1, descending=True, stable=True)
    return values[:, :k], index[:, :k]


class RawHeads(nn.Module):
    """The network with a plain tuple output: normalised (B,3,H,W) float32 -> (regression, classification, seg)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(images)
        return out.regression, out.classification, out.segmentation


class PostprocessedHybridNets(nn.Module):
    """Letterboxed uint8 images -> (detections (B,K,6), num_detections (B,), seg_classes (B,H,W) uint8).

    Same steps and thresholds as :func:`hybridnets_ros.inference.postprocess.select_detections` (best class per
    anchor, ``pre_nms_top_k`` cap, decode, clip, class-aware NMS, ``max_detections`` cap) and
    :func:`seg_class_map`; K = ``max_detections``.
    """

    def __init__(self, model: nn.Module, config: ModelConfig, postprocess: DetectionThresholds) -> None:
        super().__init__()
        postprocess.validate()
        self.model = model
        self.input_hw = tuple(config.input_size)
        self.seg_mode = config.seg_mode
        self.num_classes = config.num_classes
        anchors = generate_anchors(config, self.input_hw)
        self.register_buffer("anchors", anchors, persistent=False)
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.score_threshold = float(postprocess.score_threshold)
        self.iou_threshold = float(postprocess.nms_iou_threshold)
        self.top_k = min(int(postprocess.pre_nms_top_k), anchors.shape[0])
        self.max_detections = min(int(postprocess.max_detections), self.top_k * self.num_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The pipeline's operation order (ToTensor then Normalize), so the network sees the same input.
        x = (images.to(torch.float32) / 255 - self.mean) / self.std
        out = self.model(x)
        detections, count = self.detect(out.regression, out.classification)
        return detections, count, seg_class_map(out.segmentation, self.seg_mode)

    def detect(self, regression: torch.Tensor, classification: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,N,4) deltas, (B,N,C) probabilities -> (B,K,6) rows and (B,) counts."""
        k = self.top_k
        best_score, best_class = classification.max(dim=2)
        top_scores, top_idx = best_score.topk(k, dim=1)
        deltas = torch.gather(regression, 1, top_idx.unsqueeze(-1).expand(-1, -1, 4))
        boxes = clip_boxes(decode_boxes(self.anchors[top_idx], deltas), self.input_hw)
        top_classes = torch.gather(best_class, 1, top_idx)
        classes = torch.arange(self.num_classes, device=regression.device).view(1, -1, 1)
        not_best = torch.full_like(top_scores, _NOT_BEST_CLASS).unsqueeze(1)
        class_scores = torch.where(classes == top_classes.unsqueeze(1), top_scores.unsqueeze(1), not_best)  # (B,C,k)
        # ONNX NMS puts each box's corners in order itself, while the pipeline's IoU gives an inverted box (an
        # anchor decoded outside the image, then clipped) no overlap with anything; collapsing inverted boxes to
        # zero area gives the same decisions in both.
        nms_boxes = torch.cat([boxes[..., :2], torch.maximum(boxes[..., 2:], boxes[..., :2])], dim=-1)
        selected = torch.ops.hybridnets_export.non_max_suppression(
            nms_boxes, class_scores, self.max_detections, self.iou_threshold, self.score_threshold
        )
        image, cls, box = selected[:, 0], selected[:, 1], selected[:, 2]
        # Scatter the survivors into a dense (B, C*k) score table, then take the best K per image: a fixed-size
        # output sorted by descending score, whatever number of boxes NMS kept.
        flat_scores = class_scores.flatten(1)
        kept = torch.zeros_like(flat_scores, dtype=torch.bool).index_put(
            (image, cls * k + box), torch.ones_like(box, dtype=torch.bool))
        ranked = torch.where(kept, flat_scores, torch.full_like(flat_scores, _NOT_BEST_CLASS))
        scores, flat_idx = _top(ranked, self.max_detections)
        valid = scores > _NOT_BEST_CLASS
        box_idx = flat_idx % k
        out_boxes = torch.gather(boxes, 1, box_idx.unsqueeze(-1).expand(-1, -1, 4))
        out_classes = torch.div(flat_idx, k, rounding_mode="floor").to(torch.float32)
        rows = torch.cat([out_boxes, scores.unsqueeze(-1), out_classes.unsqueeze(-1)], dim=2)
        rows = torch.where(valid.unsqueeze(-1), rows, torch.zeros_like(rows))
        return rows, valid.sum(dim=1)
