"""EfficientNet-B0..B7 encoder with efficientnet_pytorch 0.7.1 semantics and state-dict keys.

Returns the stride 4/8/16/32 features (p2..p5). The head conv (``_conv_head``, ``_bn1``) is built so that upstream
checkpoints load strictly, but it is never run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hybridnets_ros.model.layers import Conv2dStaticSame, batch_norm, swish
from hybridnets_ros.model.staged_encoder import StagedEncoder


@dataclass(frozen=True)
class EfficientNetParams:
    width: float
    depth: float
    image_size: int  # the static size the same-padding is computed for
    drop_connect_rate: float = 0.2


EFFICIENTNET_PARAMS = {
    "efficientnet-b0": EfficientNetParams(1.0, 1.0, 224),
    "efficientnet-b1": EfficientNetParams(1.0, 1.1, 240),
    "efficientnet-b2": EfficientNetParams(1.1, 1.2, 260),
    "efficientnet-b3": EfficientNetParams(1.2, 1.4, 300),
    "efficientnet-b4": EfficientNetParams(1.4, 1.8, 380),
    "efficientnet-b5": EfficientNetParams(1.6, 2.2, 456),
    "efficientnet-b6": EfficientNetParams(1.8, 2.6, 528),
    "efficientnet-b7": EfficientNetParams(2.0, 3.1, 600),
}


@dataclass(frozen=True)
class StageArgs:
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int
    se_ratio: float = 0.25


BASE_STAGES = (
    StageArgs(1, 3, 1, 1, 32, 16),
    StageArgs(2, 3, 2, 6, 16, 24),
    StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80),
    StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192),
    StageArgs(1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channel count scaled by ``width``, rounded to a multiple of ``divisor`` without losing more than 10 %."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


@dataclass(frozen=True)
class BlockSpec:
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    expand: int
    se_ratio: float
    image_size: int  # static input size of this block


def block_specs(params: EfficientNetParams) -> list[BlockSpec]:
    """One entry per MBConv block, with the static image size each block's padding is computed for."""
    size = math.ceil(params.image_size / 2)  # after the stride-2 stem
    specs = []
    for stage in BASE_STAGES:
        in_ch = round_filters(stage.in_channels, params.width)
        out_ch = round_filters(stage.out_channels, params.width)
        for i in range(round_repeats(stage.repeats, params.depth)):
            stride = stage.stride if i == 0 else 1
            specs.append(BlockSpec(in_ch if i == 0 else out_ch, out_ch, stage.kernel, stride, stage.expand,
                                   stage.se_ratio, size))
            size = math.ceil(size / stride)
    return specs


# The upstream encoder takes b0's stride-16 feature after the first 112-channel block rather than the last one;
# kept so that an upstream-trained d0 state dict gives upstream's outputs.
UPSTREAM_STAGE_ENDS = {"efficientnet-b0": (3, 5, 9, 16)}


def stage_ends(specs: list[BlockSpec]) -> tuple[int, int, int, int]:
    """Block indices (exclusive) where p2..p5 are taken: right before each later stride-2 block, and the end."""
    downsamples = [i for i, s in enumerate(specs) if s.stride == 2]
    if len(downsamples) != 4:
        raise ValueError(f"expected 4 stride-2 blocks in the EfficientNet, found {len(downsamples)}")
    return downsamples[1], downsamples[2], downsamples[3], len(specs)


class MBConvBlock(nn.Module):
    """Inverted residual: [expand 1x1] -> depthwise kxk -> squeeze-excite -> project 1x1 [+ skip]."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.spec = spec
        mid = spec.in_channels * spec.expand
        if spec.expand != 1:
            self._expand_conv = Conv2dStaticSame(spec.in_channels, mid, 1, spec.image_size)
            self._bn0 = batch_norm(mid)
        self._depthwise_conv = Conv2dStaticSame(mid, mid, spec.kernel, spec.image_size, stride=spec.stride, groups=mid)
        self._bn1 = batch_norm(mid)
        squeezed = max(1, int(spec.in_channels * spec.se_ratio))
        out_size = math.ceil(spec.image_size / spec.stride)
        self._se_reduce = Conv2dStaticSame(mid, squeezed, 1, out_size, bias=True)
        self._se_expand = Conv2dStaticSame(squeezed, mid, 1, out_size, bias=True)
        self._project_conv = Conv2dStaticSame(mid, spec.out_channels, 1, out_size)
        self._bn2 = batch_norm(spec.out_channels)
        self.has_skip = spec.stride == 1 and spec.in_channels == spec.out_channels

    def forward(self, x: torch.Tensor, drop_connect_rate: float = 0.0) -> torch.Tensor:
        y = x
        if self.spec.expand != 1:
            y = swish(self._bn0(self._expand_conv(y)))
        y = swish(self._bn1(self._depthwise_conv(y)))
        s = F.adaptive_avg_pool2d(y, 1)
        s = self._se_expand(swish(self._se_reduce(s)))
        y = torch.sigmoid(s) * y
        y = self._bn2(self._project_conv(y))
        if not self.has_skip:
            return y
        if self.training and drop_connect_rate > 0:
            y = drop_path(y, drop_connect_rate)
        return y + x


def drop_path(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability ``rate``, rescale the rest."""
    keep = 1.0 - rate
    mask = torch.floor(keep + torch.rand((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device))
    return x / keep * mask


class EfficientNetEncoder(StagedEncoder):
    """EfficientNet feature extractor: (B,3,H,W) -> p2..p5 at strides 4, 8, 16, 32.

    ``out_channels`` gives the four widths (b3: 32, 48, 136, 384).
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in EFFICIENTNET_PARAMS:
            raise ValueError(f"unknown backbone {name!r}; known: {sorted(EFFICIENTNET_PARAMS)}")
        self.name = name
        self.params = EFFICIENTNET_PARAMS[name]
        stem = round_filters(STEM_CHANNELS, self.params.width)
        self._conv_stem = Conv2dStaticSame(3, stem, 3, self.params.image_size, stride=2)
        self._bn0 = batch_norm(stem)
        specs = block_specs(self.params)
        self._blocks = nn.ModuleList(MBConvBlock(s) for s in specs)
        # Upstream keeps the classifier-head conv; built only so that upstream state dicts load strictly.
        head = round_filters(HEAD_CHANNELS, self.params.width)
        self._conv_head = Conv2dStaticSame(specs[-1].out_channels, head, 1, math.ceil(self.params.image_size / 32))
        self._bn1 = batch_norm(head)
        self.stage_ends = UPSTREAM_STAGE_ENDS.get(name, stage_ends(specs))
        self.out_channels = tuple(specs[end - 1].out_channels for end in self.stage_ends)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> (B,stem,H/2,W/2)."""
        return swish(self._bn0(self._conv_stem(x)))

    def run_blocks(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Blocks ``start`` to ``end - 1`` applied to ``x`` (training splits the encoder at these calls)."""
        num_blocks = len(self._blocks)
        for i in range(start, end):
            # Stochastic depth grows linearly with the block index, as upstream.
            x = self._blocks[i](x, self.params.drop_connect_rate * i / num_blocks)
        return x
