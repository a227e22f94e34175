"""Colour moment matching: a frame's per-channel mean and standard deviation replaced by other ones.

The zero-frequency case of Fourier domain adaptation (Yang & Soatto, CVPR 2020), which gives labeled source images
the low frequencies of the amplitude spectrum of target images. ``hybridnets-distill --restyle-labeled`` shows each
labeled frame in the colours of an unlabeled frame of the same step, so the labels teach the drives' colours.

Moments are taken over the image content only: letterbox padding (every channel at ``PAD_VALUE``) is left out and
left as it is. All on the images' device, batched.
"""
from __future__ import annotations

import torch
from torch import Tensor

from hybridnets_ros.conventions import PAD_VALUE

MIN_STD = 1.0  # grey levels: a flat frame is shifted, not amplified into noise


def content_mask(images: Tensor) -> Tensor:
    """(B,3,H,W) uint8 -> (B,1,H,W) bool, False on letterbox padding."""
    return (images != PAD_VALUE).any(dim=1, keepdim=True)


def frame_moments(images: Tensor, content: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(B,3,H,W) uint8 -> per-frame, per-channel mean and standard deviation of the content, each (B,3,1,1) float32
    in grey levels. ``content``: the images' :func:`content_mask`, when the caller has it already."""
    mask = (content_mask(images) if content is None else content).float()
    count = mask.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)
    x = images.float()
    mean = (x * mask).sum(dim=(2, 3), keepdim=True) / count
    var = ((x - mean).pow(2) * mask).sum(dim=(2, 3), keepdim=True) / count
    return mean, var.sqrt()


def match_moments(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(B,3,H,W) uint8 with its content's per-channel mean/std moved to ``mean``/``std`` (each broadcastable to
    (B,3,1,1), grey levels); padding is kept. Returns uint8."""
    content = content_mask(images)
    own_mean, own_std = frame_moments(images, content)
    matched = (images.float() - own_mean) / own_std.clamp(min=MIN_STD) * std + mean
    matched = matched.clamp(0.0, 255.0).round().to(torch.uint8)
    return torch.where(content, matched, images)


def restyle_like(images: Tensor, examples: Tensor) -> Tensor:
    """(B,3,H,W) uint8 ``images``, each in the colours of ``examples[b % len(examples)]`` ((E,3,H',W') uint8)."""
    mean, std = frame_moments(examples)
    index = torch.arange(images.shape[0], device=mean.device) % examples.shape[0]
    return match_moments(images, mean[index].to(images.device), std[index].to(images.device))
