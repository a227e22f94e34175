"""BiFPN cell with fast normalised fusion over P3..P7 (EfficientDet)."""
from __future__ import annotations

import torch
from torch import nn

from hybridnets_ros.model.layers import (
    Conv2dDynamicSame,
    MaxPool2dSamePadZero,
    SeparableConvBlock,
    Upsample,
    batch_norm,
    swish,
)

FUSION_EPS = 1e-4

Pyramid = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _projection(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv (bias) + BN, used to bring encoder features to the BiFPN width."""
    return nn.Sequential(Conv2dDynamicSame(in_channels, out_channels, 1), batch_norm(out_channels))


def _fuse(weights: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor:
    """Fast normalised fusion: sum_i relu(w_i) x_i / (sum relu(w) + eps), then swish."""
    w = torch.relu(weights)
    w = w / (torch.sum(w, dim=0) + FUSION_EPS)
    fused = w[0] * inputs[0]
    for i in range(1, len(inputs)):
        fused = fused + w[i] * inputs[i]
    return swish(fused)


class BiFPN(nn.Module):
    """One BiFPN cell, (P3..P7) -> (P3..P7), all ``num_channels`` wide.

    The first cell takes the encoder's (C3, C4, C5) with widths ``conv_channels`` instead, and builds P6/P7 by
    projecting C5 and max-pooling.
    """

    def __init__(self, num_channels: int, conv_channels: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        self.first_time = conv_channels is not None
        # Parameter registration order mirrors upstream's state dict.
        self.p6_w1 = nn.Parameter(torch.ones(2))
        self.p5_w1 = nn.Parameter(torch.ones(2))
        self.p4_w1 = nn.Parameter(torch.ones(2))
        self.p3_w1 = nn.Parameter(torch.ones(2))
        self.p4_w2 = nn.Parameter(torch.ones(3))
        self.p5_w2 = nn.Parameter(torch.ones(3))
        self.p6_w2 = nn.Parameter(torch.ones(3))
        self.p7_w2 = nn.Parameter(torch.ones(2))
        self.conv6_up = SeparableConvBlock(num_channels)
        self.conv5_up = SeparableConvBlock(num_channels)
        self.conv4_up = SeparableConvBlock(num_channels)
        self.conv3_up = SeparableConvBlock(num_channels)
        self.conv4_down = SeparableConvBlock(num_channels)
        self.conv5_down = SeparableConvBlock(num_channels)
        self.conv6_down = SeparableConvBlock(num_channels)
        self.conv7_down = SeparableConvBlock(num_channels)
        self.upsample = Upsample(2, "nearest")
        self.downsample = MaxPool2dSamePadZero(3, 2)
        if conv_channels is not None:
            c3, c4, c5 = conv_channels
            self.p5_down_channel = _projection(c5, num_channels)
            self.p4_down_channel = _projection(c4, num_channels)
            self.p3_down_channel = _projection(c3, num_channels)
            self.p5_to_p6 = nn.Sequential(
                Conv2dDynamicSame(c5, num_channels, 1), batch_norm(num_channels), MaxPool2dSamePadZero(3, 2)
            )
            self.p6_to_p7 = MaxPool2dSamePadZero(3, 2)
            self.p4_down_channel_2 = _projection(c4, num_channels)
            self.p5_down_channel_2 = _projection(c5, num_channels)

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> Pyramid:
        """(C3, C4, C5) for the first cell, else (P3..P7) -> (P3..P7), strides 8..128."""
        if self.first_time:
            c3, c4, c5 = inputs
            p6_in = self.p5_to_p6(c5)
            p7_in = self.p6_to_p7(p6_in)
            p3_in = self.p3_down_channel(c3)
            p4_in = self.p4_down_channel(c4)
            p5_in = self.p5_down_channel(c5)
        else:
            p3_in, p4_in, p5_in, p6_in, p7_in = inputs

        up = self.upsample
        p6_td = self.conv6_up(_fuse(self.p6_w1, [p6_in, up(p7_in)]))
        p5_td = self.conv5_up(_fuse(self.p5_w1, [p5_in, up(p6_td)]))
        p4_td = self.conv4_up(_fuse(self.p4_w1, [p4_in, up(p5_td)]))
        p3_out = self.conv3_up(_fuse(self.p3_w1, [p3_in, up(p4_td)]))

        if self.first_time:
            # The bottom-up path of the first cell re-projects C4/C5 with its own weights.
            p4_in = self.p4_down_channel_2(c4)
            p5_in = self.p5_down_channel_2(c5)

        down = self.downsample
        p4_out = self.conv4_down(_fuse(self.p4_w2, [p4_in, p4_td, down(p3_out)]))
        p5_out = self.conv5_down(_fuse(self.p5_w2, [p5_in, p5_td, down(p4_out)]))
        p6_out = self.conv6_down(_fuse(self.p6_w2, [p6_in, p6_td, down(p5_out)]))
        p7_out = self.conv7_down(_fuse(self.p7_w2, [p7_in, down(p6_out)]))
        return p3_out, p4_out, p5_out, p6_out, p7_out
