"""Class-aware greedy non-maximum suppression in pure torch, batched over images.

Greedy NMS visits boxes by descending score and keeps a box unless an already kept box of the same class overlaps
it with IoU > threshold. With S[i, j] = "i ranks before j, same class, IoU > thr", the kept set is the unique
solution of keep[j] = valid[j] and not any_i(keep[i] and S[i, j]); because S is strictly upper triangular,
iterating that equation from keep = valid reaches the solution, and stops changing exactly there. Each iteration
is one batched matrix-vector product, so there is no Python loop over boxes.
The ranks are solved in blocks: a block first drops the boxes suppressed by the kept boxes of earlier blocks (one
product), then iterates within itself. A long suppression chain thus costs iterations on small block matrices
only, which bounds the worst case; usually each block settles in a few iterations.
On the CPU the same S is instead scanned once in rank order (numpy, one vector OR per kept box): there each
iteration above costs several operator dispatches, and with ~1000 dense candidates the iterations took 107 ms
where the scan takes about 1 ms (README, speed section). On a GPU the iteration avoids per-box host round trips.
Memory is O(K^2) per image: cap the candidates (top-k) before calling.
:func:`onnx_non_max_suppression` is the ONNX ``NonMaxSuppression`` op's semantics as a torch custom op, computed
with the same NMS: the exporters translate it to that op (what an exported graph runs instead of Python control).
"""
from __future__ import annotations

import numpy as np
import torch

_BLOCK = 128  # ranks solved together; bounds the cost of a long suppression chain


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of x1y1x2y2 boxes: a (..., N, 4), b (..., M, 4) -> (..., N, M). Empty boxes give IoU 0."""
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    # One (N, M) plane per coordinate rather than (N, M, 2) pairs: strided pair tensors were 2-3x slower on CPU.
    width = (torch.minimum(ax2[..., :, None], bx2[..., None, :]) - torch.maximum(ax1[..., :, None], bx1[..., None, :]))
    height = (torch.minimum(ay2[..., :, None], by2[..., None, :]) - torch.maximum(ay1[..., :, None], by1[..., None, :]))
    inter = width.clamp(min=0) * height.clamp(min=0)
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    class_ids: torch.Tensor,
    iou_threshold: float,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy class-aware NMS of B images at once.

    boxes (B,K,4) x1y1x2y2; scores (B,K); class_ids (B,K) int; valid (B,K) bool marks real candidates (padding is
    never kept and never suppresses). A box is suppressed by a kept, higher-ranked box of the same class with
    IoU > ``iou_threshold`` (strict). Equal scores rank by input position.
    Returns ``(order (B,K) int64, keep (B,K) bool)``: ``order`` sorts each image by descending score and
    ``keep[b, r]`` says whether the box of rank r, i.e. ``order[b, r]``, survives; so
    ``order[b][keep[b]]`` lists the kept input indices by descending score.
    """
    if valid is None:
        valid = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    batch, k = scores.shape
    # Padding sorts last; a stable sort gives ties a deterministic rank (input position).
    sort_key = torch.where(valid, scores.to(torch.float32), torch.full_like(scores, float("-inf"), dtype=torch.float32))
    order = torch.sort(sort_key, dim=1, descending=True, stable=True).indices
    boxes_s = torch.gather(boxes.to(torch.float32), 1, order.unsqueeze(-1).expand(batch, k, 4))
    class_s = torch.gather(class_ids, 1, order)
    valid_s = torch.gather(valid, 1, order)
    if k == 0:
        return order, valid_s
    later = torch.ones(k, k, dtype=torch.bool, device=boxes.device).triu(diagonal=1)
    suppresses = (box_iou(boxes_s, boxes_s) > iou_threshold) & later
    suppresses &= class_s[:, :, None] == class_s[:, None, :]
    suppresses &= valid_s[:, :, None] & valid_s[:, None, :]
    if suppresses.device.type == "cpu":
        return order, torch.from_numpy(greedy_scan(suppresses.numpy(), valid_s.numpy()))
    # (B, j, i) layout: the products below are then row-major matrix-vector products, much faster on CPU.
    suppressed_by = suppresses.transpose(1, 2).to(torch.float32).contiguous()
    keep = torch.zeros_like(valid_s)
    num_valid = int(valid_s.sum(dim=1).max())  # padding ranks last: nothing to solve beyond it
    for start in range(0, num_valid, _BLOCK):
        end = min(start + _BLOCK, num_valid)
        candidates = valid_s[:, start:end]
        if start > 0:
            earlier = keep[:, :start].to(torch.float32).unsqueeze(2)
            candidates = candidates & ~(torch.bmm(suppressed_by[:, start:end, :start], earlier).squeeze(2) > 0)
        within = suppressed_by[:, start:end, start:end]
        block = candidates
        # Each pass fixes at least the next undecided rank, so end - start passes always suffice.
        for _ in range(end - start):
            suppressed = torch.bmm(within, block.to(torch.float32).unsqueeze(2)).squeeze(2) > 0
            settled = candidates & ~suppressed
            if torch.equal(settled, block):
                break
            block = settled
        keep[:, start:end] = block
    return order, keep


def greedy_scan(suppresses: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Greedy NMS decisions by one pass over the ranks: suppresses (B,K,K) bool S[i, j] as above, valid (B,K)
    bool -> keep (B,K) bool. A rank not yet suppressed is kept and suppresses what its row marks."""
    keep = np.zeros_like(valid)
    for b in range(valid.shape[0]):
        removed = ~valid[b]
        rows = suppresses[b]
        for rank in np.flatnonzero(valid[b]):
            if not removed[rank]:
                keep[b, rank] = True
                removed |= rows[rank]
    return keep


def nms(boxes: torch.Tensor, scores: torch.Tensor, class_ids: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Class-aware greedy NMS of one image: boxes (N,4), scores (N,), class_ids (N,) -> kept indices (M,) by score."""
    order, keep = batched_nms(boxes[None], scores[None], class_ids[None], iou_threshold)
    return order[0][keep[0]]


@torch.library.custom_op("hybridnets_export::non_max_suppression", mutates_args=())
def onnx_non_max_suppression(
    boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_threshold: float, score_threshold: float
) -> torch.Tensor:
    """ONNX ``NonMaxSuppression`` (center_point_box=0) as a torch op, which the exporters translate to that op.

    boxes (B,N,4) x1y1x2y2; scores (B,C,N). Per image and class, boxes with score > ``score_threshold`` are visited
    by descending score and kept unless a kept box has IoU > ``iou_threshold``; at most ``max_per_class`` per class.
    Returns (M,3) int64 rows ``[batch, class, box]``, by image, class, then descending score. Computed with
    :func:`batched_nms`, so a graph holding the op also runs (and traces) in torch.
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


@onnx_non_max_suppression.register_fake
def _onnx_non_max_suppression_fake(
    boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_threshold: float, score_threshold: float
) -> torch.Tensor:
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count, 3), dtype=torch.int64)
