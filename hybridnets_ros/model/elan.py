"""ELAN encoder: a student backbone designed on the gradient-path principle (efficient layer aggregation).

An ELAN block splits its input into two 1x1 projections; one is passed through a chain of 3x3 convolution pairs and
the outputs of the projections and of every pair are concatenated and fused by a 1x1 convolution. Every pair's output
reaches the fusion directly, so the shortest gradient path (through a projection) and the longest (through the whole
chain) both stay short as the chain grows, and every layer learns from a nearby loss signal. Dense 3x3 convolutions
with BatchNorm and SiLU, no depthwise or squeeze-excitation layers: they run at full speed on CPUs, OpenVINO and
TensorRT alike.

The encoder is a :class:`~hybridnets_ros.model.staged_encoder.StagedEncoder`, the interface the network, activation
checkpointing and InfoPro rely on: ``stem``, ``run_blocks`` over ``_blocks`` (here one downsampling ELAN stage per
block), ``stage_ends`` and ``out_channels`` of the p2..p5 taps at strides 4, 8, 16 and 32.
"""
from __future__ import annotations

import torch
from torch import nn

from hybridnets_ros.model.layers import batch_norm
from hybridnets_ros.model.staged_encoder import StagedEncoder

STEM_CHANNELS = (24, 32)               # two stride-2 3x3 convolutions: stride 4
STAGE_CHANNELS = (32, 64, 128, 256)    # p2..p5
STAGE_PAIRS = (1, 2, 2, 2)             # 3x3 convolution pairs in each stage's ELAN chain


class ConvBnAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + SiLU: (B,in,H,W) -> (B,out,H/stride,W/stride)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False),
            batch_norm(out_channels),
            nn.SiLU(inplace=True),
        )


class ElanBlock(nn.Module):
    """(B,in,H,W) -> (B,out,H,W): two 1x1 projections to ``out/2``, ``pairs`` chained 3x3 pairs on the second, all
    ``pairs + 2`` branch outputs concatenated and fused by a 1x1 convolution."""

    def __init__(self, in_channels: int, out_channels: int, pairs: int) -> None:
        super().__init__()
        hidden = out_channels // 2
        self.short = ConvBnAct(in_channels, hidden)
        self.long = ConvBnAct(in_channels, hidden)
        self.pairs = nn.ModuleList(
            nn.Sequential(ConvBnAct(hidden, hidden, 3), ConvBnAct(hidden, hidden, 3)) for _ in range(pairs))
        self.fuse = ConvBnAct(hidden * (pairs + 2), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.short(x), self.long(x)]
        for pair in self.pairs:
            branches.append(pair(branches[-1]))
        return self.fuse(torch.cat(branches, dim=1))


class ElanEncoder(StagedEncoder):
    """(B,3,H,W) -> p2..p5 at strides 4, 8, 16, 32 with ``out_channels`` (32, 64, 128, 256)."""

    def __init__(self) -> None:
        super().__init__()
        self._stem = nn.Sequential(ConvBnAct(3, STEM_CHANNELS[0], 3, 2), ConvBnAct(*STEM_CHANNELS, 3, 2))
        blocks = []
        previous = STEM_CHANNELS[1]
        for index, (channels, pairs) in enumerate(zip(STAGE_CHANNELS, STAGE_PAIRS)):
            down = nn.Identity() if index == 0 else ConvBnAct(previous, channels, 3, 2)
            blocks.append(nn.Sequential(down, ElanBlock(previous if index == 0 else channels, channels, pairs)))
            previous = channels
        self._blocks = nn.ModuleList(blocks)
        self.stage_ends = (1, 2, 3, 4)
        self.out_channels = STAGE_CHANNELS

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> (B,32,H/4,W/4)."""
        return self._stem(x)

    def run_blocks(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Stages ``start`` to ``end - 1`` applied to ``x`` (training splits the encoder at these calls)."""
        for i in range(start, end):
            x = self._blocks[i](x)
        return x
