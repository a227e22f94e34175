"""Building blocks shared by the encoder, BiFPN and heads.

Module attribute names follow upstream so that state-dict keys match (``.conv``, ``depthwise_conv``, ...).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the TF-ported hyper-parameters used everywhere in HybridNets."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def swish(x: torch.Tensor) -> torch.Tensor:
    # Written out instead of F.silu: SiLU's fused kernel differs by ~1 ulp, which upstream's numbers do not have.
    return x * torch.sigmoid(x)


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swish(x)


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) along one axis; the extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dDynamicSame(nn.Module):
    """Conv2d with TF-'SAME' padding computed from the actual input; the conv sits at ``.conv`` (upstream keys)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias)
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size > 1 or self.stride > 1:
            top, bottom = tf_same_pads(x.shape[-2], self.kernel_size, self.stride)
            left, right = tf_same_pads(x.shape[-1], self.kernel_size, self.stride)
            x = F.pad(x, (left, right, top, bottom))
        return self.conv(x)


class MaxPool2dSamePadZero(nn.Module):
    """3x3/2 max-pool after TF-'SAME' padding with zeros (not -inf), as upstream does."""

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_pads(x.shape[-2], self.kernel_size, self.stride)
        left, right = tf_same_pads(x.shape[-1], self.kernel_size, self.stride)
        x = F.pad(x, (left, right, top, bottom))
        return F.max_pool2d(x, self.kernel_size, self.stride)


class SeparableConvBlock(nn.Module):
    """Depthwise 3x3 (no bias) -> pointwise 1x1 (bias) [-> BN] [-> swish]."""

    def __init__(self, in_channels: int, out_channels: int | None = None, norm: bool = True, activation: bool = False):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.depthwise_conv = Conv2dDynamicSame(in_channels, in_channels, 3, groups=in_channels, bias=False)
        self.pointwise_conv = Conv2dDynamicSame(in_channels, out_channels, 1)
        self.norm = norm
        self.activation = activation
        if norm:
            self.bn = batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pointwise_conv(self.depthwise_conv(x))
        if self.norm:
            x = self.bn(x)
        if self.activation:
            x = swish(x)
        return x


class Upsample(nn.Module):
    """Upsampling by an integer factor: 'nearest', or 'bilinear' with align_corners=True (upstream's choice)."""

    def __init__(self, scale_factor: int, mode: str = "nearest") -> None:
        super().__init__()
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"Upsample mode must be 'nearest' or 'bilinear', got {mode!r}")
        self.scale_factor = scale_factor
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            return F.interpolate(x, scale_factor=self.scale_factor, mode="nearest")
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=True)


class Conv2dStaticSame(nn.Conv2d):
    """Conv2d whose TF-'SAME' zero padding is fixed at construction for a given input size (efficientnet_pytorch).

    The pads do not follow the real input size; that is upstream's behaviour and the released weights rely on it.
    Subclassing nn.Conv2d keeps the parameters at ``<name>.weight`` as in upstream.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        image_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias)
        before, after = tf_same_pads(image_size, kernel_size, stride)
        self.static_pads = (before, after, before, after)  # (left, right, top, bottom); the image is square

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.static_pads):
            x = F.pad(x, self.static_pads)
        return super().forward(x)
