"""Detection heads (box regressor, classifier) and the segmentation branch (BiFPN decoder + head)."""
from __future__ import annotations

import torch
from torch import nn

from hybridnets_ros.model.layers import Conv2dDynamicSame, SeparableConvBlock, Swish, Upsample, batch_norm, swish


class _AnchorHead(nn.Module):
    """Separable convs shared over levels, with a BN per level and layer, then a header conv.

    Maps each level (B, C, H_l, W_l) to (B, H_l*W_l*A, values) and concatenates the levels (level -> y -> x -> anchor).
    """

    def __init__(self, in_channels: int, num_anchors: int, values: int, num_layers: int, pyramid_levels: int = 5):
        super().__init__()
        self.values = values
        self.conv_list = nn.ModuleList(
            SeparableConvBlock(in_channels, in_channels, norm=False, activation=False) for _ in range(num_layers)
        )
        self.bn_list = nn.ModuleList(
            nn.ModuleList(batch_norm(in_channels) for _ in range(num_layers)) for _ in range(pyramid_levels)
        )
        self.header = SeparableConvBlock(in_channels, num_anchors * values, norm=False, activation=False)

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        outputs = []
        for feat, bns in zip(features, self.bn_list):
            for conv, bn in zip(self.conv_list, bns):
                feat = swish(bn(conv(feat)))
            feat = self.header(feat)
            outputs.append(feat.permute(0, 2, 3, 1).reshape(feat.shape[0], -1, self.values))
        return torch.cat(outputs, dim=1)


class Regressor(_AnchorHead):
    """P3..P7 -> (B, N, 4) box deltas (dy, dx, dh, dw)."""

    def __init__(self, in_channels: int, num_anchors: int, num_layers: int, pyramid_levels: int = 5):
        super().__init__(in_channels, num_anchors, 4, num_layers, pyramid_levels)


class Classifier(_AnchorHead):
    """P3..P7 -> (B, N, num_classes) class probabilities (sigmoid applied here, as upstream)."""

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_layers: int, pyramid_levels: int = 5):
        super().__init__(in_channels, num_anchors, num_classes, num_layers, pyramid_levels)

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.sigmoid(super().forward(features))


class Conv3x3BNSwish(nn.Module):
    """3x3 conv (no bias) -> BN -> swish -> separable conv block [-> bilinear x2, align_corners=True]."""

    def __init__(self, in_channels: int, out_channels: int, upsample: bool) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Conv2dDynamicSame(in_channels, out_channels, 3, bias=False), batch_norm(out_channels), Swish()
        )
        self.conv_sp = SeparableConvBlock(out_channels)
        self.up = Upsample(2, "bilinear") if upsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.conv_sp(self.block(x)))


class SegmentationBlock(nn.Module):
    """``max(1, n_upsamples)`` Conv3x3BNSwish blocks, each doubling the resolution when n_upsamples > 0."""

    def __init__(self, in_channels: int, out_channels: int, n_upsamples: int) -> None:
        super().__init__()
        blocks = [Conv3x3BNSwish(in_channels, out_channels, upsample=n_upsamples > 0)]
        blocks += [Conv3x3BNSwish(out_channels, out_channels, upsample=True) for _ in range(1, n_upsamples)]
        self.block = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class BiFPNDecoder(nn.Module):
    """(p2, P3..P7) -> (B, seg_channels, H/4, W/4): every level brought to stride 4, then summed."""

    def __init__(self, p2_channels: int, pyramid_channels: int, seg_channels: int = 64, dropout: float = 0.2):
        super().__init__()
        # seg_blocks[i] handles P7, P6, P5, P4, P3: 5..1 upsamplings reach stride 4.
        self.seg_blocks = nn.ModuleList(
            SegmentationBlock(pyramid_channels, seg_channels, n_upsamples=n) for n in (5, 4, 3, 2, 1)
        )
        self.seg_p2 = SegmentationBlock(p2_channels, seg_channels, n_upsamples=0)
        self.dropout = nn.Dropout2d(p=dropout)

    def forward(self, p2: torch.Tensor, pyramid: tuple[torch.Tensor, ...]) -> torch.Tensor:
        p3, p4, p5, p6, p7 = pyramid
        out = self.seg_p2(p2)
        # Summed in upstream's order (p2, then P7 down to P3) to stay close in floating point.
        for block, feat in zip(self.seg_blocks, (p7, p6, p5, p4, p3)):
            out = out + block(feat)
        return self.dropout(out)


class SegmentationHead(nn.Sequential):
    """1x1 conv -> bilinear x4 (align_corners=True): (B, C, H/4, W/4) -> (B, out, H, W) logits."""

    def __init__(self, in_channels: int, out_channels: int, upsampling: int = 4) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 1), Upsample(upsampling, "bilinear"))
