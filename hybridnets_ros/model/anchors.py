"""Anchor boxes matching the regressor/classifier output order (level -> y -> x -> anchor)."""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch

from hybridnets_ros.conventions import PYRAMID_STRIDES, check_input_hw
from hybridnets_ros.model.config import ModelConfig


def generate_anchors(config: ModelConfig, input_hw: Sequence[int]) -> torch.Tensor:
    """Anchors in input pixels, (N, 4) float32 (y1, x1, y2, x2), N = sum over P3..P7 of H_l*W_l*num_anchors.

    Per location the anchors run scale-major over (scale, ratio) pairs, ratio = (x, y) multipliers; computed in
    float64 then cast, so the values equal upstream's bit for bit.
    """
    h, w = check_input_hw(input_hw)
    levels = []
    for stride in PYRAMID_STRIDES:
        ys = np.arange(stride / 2, h, stride)
        xs = np.arange(stride / 2, w, stride)
        xv, yv = np.meshgrid(xs, ys)  # row-major: y outer, x inner
        xv, yv = xv.reshape(-1), yv.reshape(-1)
        per_anchor = []
        for scale, (ratio_x, ratio_y) in itertools.product(config.anchor_scales, config.anchor_ratios):
            base = config.anchor_scale * stride * scale
            half_w = base * ratio_x / 2.0
            half_h = base * ratio_y / 2.0
            per_anchor.append(np.stack((yv - half_h, xv - half_w, yv + half_h, xv + half_w), axis=1))
        levels.append(np.stack(per_anchor, axis=1).reshape(-1, 4))  # (HW, A, 4) -> (HW*A, 4)
    return torch.from_numpy(np.concatenate(levels, axis=0).astype(np.float32))
