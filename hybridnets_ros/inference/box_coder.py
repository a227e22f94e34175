"""Anchor box coding: regression deltas <-> boxes.

Anchors are (y1, x1, y2, x2) and deltas are (dy, dx, dh, dw) relative to the anchor centre and size, as in the
reference model; decoded boxes are (x1, y1, x2, y2). No variances, and no clamp on ``exp`` (the reference has none).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def _anchor_geometry(anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    yc = (anchors[..., 0] + anchors[..., 2]) / 2
    xc = (anchors[..., 1] + anchors[..., 3]) / 2
    ha = anchors[..., 2] - anchors[..., 0]
    wa = anchors[..., 3] - anchors[..., 1]
    return yc, xc, ha, wa


def decode_boxes(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Apply deltas to anchors.

    anchors: (N,4) or broadcastable to deltas, (y1,x1,y2,x2) input pixels; deltas: (..., N, 4) (dy,dx,dh,dw).
    Returns (..., N, 4) (x1,y1,x2,y2) input pixels.
    """
    yca, xca, ha, wa = _anchor_geometry(anchors)
    w = deltas[..., 3].exp() * wa
    h = deltas[..., 2].exp() * ha
    yc = deltas[..., 0] * ha + yca
    xc = deltas[..., 1] * wa + xca
    return torch.stack([xc - w / 2.0, yc - h / 2.0, xc + w / 2.0, yc + h / 2.0], dim=-1)


def encode_boxes(anchors: torch.Tensor, boxes: torch.Tensor, min_size: float = 1.0) -> torch.Tensor:
    """Deltas that turn anchors into boxes: the inverse of :func:`decode_boxes` (regression targets).

    anchors: (..., 4) (y1,x1,y2,x2); boxes: (..., 4) (x1,y1,x2,y2), broadcastable to each other.
    Box widths and heights are clamped to at least ``min_size`` so that the log stays finite for degenerate boxes
    (the reference loss clamps them at 1 px). Returns (..., 4) (dy,dx,dh,dw).
    """
    yca, xca, ha, wa = _anchor_geometry(anchors)
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=min_size)
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=min_size)
    xc = boxes[..., 0] + (boxes[..., 2] - boxes[..., 0]) / 2
    yc = boxes[..., 1] + (boxes[..., 3] - boxes[..., 1]) / 2
    return torch.stack([(yc - yca) / ha, (xc - xca) / wa, torch.log(h / ha), torch.log(w / wa)], dim=-1)


def clip_boxes(boxes: torch.Tensor, image_hw: Sequence[int]) -> torch.Tensor:
    """Clip (..., 4) x1y1x2y2 to an image of size (H, W) as the reference does: x1,y1 >= 0, x2 <= W-1, y2 <= H-1."""
    h, w = int(image_hw[0]), int(image_hw[1])
    x1 = boxes[..., 0].clamp(min=0)
    y1 = boxes[..., 1].clamp(min=0)
    x2 = boxes[..., 2].clamp(max=w - 1)
    y2 = boxes[..., 3].clamp(max=h - 1)
    return torch.stack([x1, y1, x2, y2], dim=-1)
