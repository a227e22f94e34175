"""The encoder interface the network and training rely on: a stem, blocks run in ranges, four stage taps."""
from __future__ import annotations

import torch
from torch import nn


class StagedEncoder(nn.Module):
    """(B,3,H,W) -> p2..p5 at strides 4, 8, 16, 32.

    A subclass sets ``stage_ends`` (the block index after each of p2..p5), ``out_channels`` (of p2..p5) and defines
    ``stem`` and ``run_blocks``; training splits the encoder at these calls (activation checkpointing wraps
    ``run_blocks``, InfoPro runs stage ranges itself).
    """

    stage_ends: tuple[int, int, int, int]
    out_channels: tuple[int, int, int, int]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def run_blocks(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        features = []
        start = 0
        for end in self.stage_ends:
            x = self.run_blocks(x, start, end)
            features.append(x)
            start = end
        p2, p3, p4, p5 = features
        return p2, p3, p4, p5
