"""HybridNets: EfficientNet encoder + BiFPN + detection heads + segmentation branch."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from hybridnets_ros.conventions import PYRAMID_STRIDES, check_input_hw
from hybridnets_ros.model.bifpn import BiFPN
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.efficientnet import EfficientNetEncoder
from hybridnets_ros.model.heads import BiFPNDecoder, Classifier, Regressor, SegmentationHead

CLASSIFIER_PRIOR = 0.01  # initial foreground probability of the classifier (focal-loss prior)


class HybridNetsOutput(NamedTuple):
    """Raw network outputs; N anchors in :func:`generate_anchors` order.

    regression (B, N, 4) (dy, dx, dh, dw); classification (B, N, C) probabilities; segmentation (B, S, H, W) logits.
    """

    regression: torch.Tensor
    classification: torch.Tensor
    segmentation: torch.Tensor


class HybridNetsIntermediates(NamedTuple):
    """Every stage's output, for conformance tests and debugging."""

    encoder: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # p2..p5, strides 4..32
    bifpn: tuple[torch.Tensor, ...]  # P3..P7, strides 8..128
    decoder: torch.Tensor  # (B, 64, H/4, W/4), before the segmentation head
    output: HybridNetsOutput


class HybridNets(nn.Module):
    """HybridNets for a :class:`ModelConfig`; submodule names are upstream's, so upstream state dicts load strictly.

    forward: (B, 3, H, W) normalised RGB, H and W multiples of 128 -> :class:`HybridNetsOutput`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        spec = config.spec
        # The encoder is built first so its real channel widths can size the BiFPN and decoder; the other modules
        # are registered in upstream's order (bifpn, regressor, bifpndecoder, segmentation_head, classifier, encoder).
        encoder = EfficientNetEncoder(spec.backbone)
        p2_channels, c3, c4, c5 = encoder.out_channels
        width = spec.fpn_num_filters
        self.bifpn = nn.Sequential(
            *(BiFPN(width, (c3, c4, c5) if i == 0 else None) for i in range(spec.fpn_cell_repeats))
        )
        self.regressor = Regressor(width, config.num_anchors, spec.box_class_repeats, len(PYRAMID_STRIDES))
        self.bifpndecoder = BiFPNDecoder(p2_channels, width)
        self.segmentation_head = SegmentationHead(64, config.seg_out_channels)
        self.classifier = Classifier(
            width, config.num_anchors, config.num_classes, spec.box_class_repeats, len(PYRAMID_STRIDES)
        )
        self.encoder = encoder
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Training-from-scratch init: upstream's decoder/head init plus EfficientDet's head init."""
        for module in (self.bifpn, self.bifpndecoder):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        for m in self.segmentation_head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for head in (self.regressor, self.classifier):
            for m in head.modules():
                if isinstance(m, nn.Conv2d):
                    # Variance scaling (fan_in, gain 1) keeps the deep unnormalised head convs stable.
                    fan_in = m.weight[0].numel()
                    nn.init.normal_(m.weight, std=math.sqrt(1.0 / fan_in))
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        # Start with a low foreground probability so the focal loss is not swamped by easy negatives.
        prior_logit = -math.log((1 - CLASSIFIER_PRIOR) / CLASSIFIER_PRIOR)
        nn.init.constant_(self.classifier.header.pointwise_conv.conv.bias, prior_logit)

    def forward_intermediates(self, x: torch.Tensor) -> HybridNetsIntermediates:
        """Like forward, but also returns the encoder, BiFPN and decoder features."""
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            check_input_hw(x.shape[-2:], "HybridNets input")
        p2, p3, p4, p5 = self.encoder(x)
        feats = self.bifpn((p3, p4, p5))
        decoder = self.bifpndecoder(p2, feats)
        output = HybridNetsOutput(
            regression=self.regressor(feats),
            classification=self.classifier(feats),
            segmentation=self.segmentation_head(decoder),
        )
        return HybridNetsIntermediates((p2, p3, p4, p5), tuple(feats), decoder, output)

    def forward(self, x: torch.Tensor) -> HybridNetsOutput:
        return self.forward_intermediates(x).output

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
