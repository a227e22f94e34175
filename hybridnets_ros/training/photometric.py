"""Strong photometric augmentation of the student's view of unlabeled frames.

The teacher grades the clean frame and the student must give the same answer from a harder view of it (the
consistency idea of mean teacher and FixMatch): without it a student that starts as a copy of its teacher sees the
teacher's exact input, every term starts at zero and there is little to learn. Only colours and sharpness change,
never geometry, so the teacher's per-anchor and per-pixel outputs stay valid targets as they are.

Batched on the images' device; every image draws its own parameters from a generator seeded per step, so a run (and a
resumed run) sees the same views.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

STUDENT_VIEWS = ("photometric", "none")
# ITU-R BT.601 luma weights of R, G, B.
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class PhotometricJitter:
    """Ranges of the per-image random changes; each is applied in this order."""

    brightness: float = 0.4    # gain in [1 - b, 1 + b]
    contrast: float = 0.4      # distance to the image's mean grey scaled by [1 - c, 1 + c]
    saturation: float = 0.5    # distance to the pixel's grey scaled by [1 - s, 1 + s]
    gamma: float = 0.3         # exponent exp(u), u in [-g, g]
    blur: float = 0.5          # probability of a 3x3 binomial blur
    noise: float = 0.04        # Gaussian noise, std drawn in [0, noise] (fraction of full scale)

    def __call__(self, images: Tensor, seed: int) -> Tensor:
        """(B,3,H,W) uint8 RGB -> (B,3,H,W) uint8 RGB, changed per image; ``seed`` fixes every draw."""
        generator = torch.Generator(device=images.device).manual_seed(seed)
        x = images.float() / 255.0
        batch = x.shape[0]

        def uniform(low: float, high: float) -> Tensor:
            draw = torch.rand((batch, 1, 1, 1), generator=generator, device=x.device)
            return low + (high - low) * draw

        x = x * uniform(1.0 - self.brightness, 1.0 + self.brightness)
        grey = luma(x)
        x = grey.mean(dim=(2, 3), keepdim=True) + (x - grey.mean(dim=(2, 3), keepdim=True)) * uniform(
            1.0 - self.contrast, 1.0 + self.contrast)
        grey = luma(x)
        x = grey + (x - grey) * uniform(1.0 - self.saturation, 1.0 + self.saturation)
        x = x.clamp(0.0, 1.0).pow(uniform(-self.gamma, self.gamma).exp())
        blurred = binomial_blur(x)
        x = torch.where(uniform(0.0, 1.0) < self.blur, blurred, x)
        noise = torch.randn(x.shape, generator=generator, device=x.device)
        x = x + noise * uniform(0.0, self.noise)
        return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def luma(x: Tensor) -> Tensor:
    """(B,3,H,W) RGB -> (B,1,H,W) grey."""
    weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def binomial_blur(x: Tensor) -> Tensor:
    """(B,C,H,W) -> the same blurred by the separable 3x3 kernel [1 2 1]/4 x [1 2 1]/4, borders replicated."""
    taps = torch.tensor((0.25, 0.5, 0.25), dtype=x.dtype, device=x.device)
    kernel = (taps[:, None] * taps[None, :]).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])


def step_seed(seed: int, step: int) -> int:
    """The jitter seed of one training step of a run seeded with ``seed``."""
    return seed * 1_000_003 + step


def student_view(kind: str) -> PhotometricJitter | None:
    """The augmentation of ``--student-augment`` (None for ``none``)."""
    if kind not in STUDENT_VIEWS:
        raise ValueError(f"--student-augment must be one of {', '.join(STUDENT_VIEWS)}, got {kind!r}")
    return PhotometricJitter() if kind == "photometric" else None
