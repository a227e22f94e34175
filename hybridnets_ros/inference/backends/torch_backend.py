"""Eager PyTorch backend: the model itself, in eval mode, optionally fp16 (CUDA) and channels-last."""
from __future__ import annotations

import torch
from torch import nn

from hybridnets_ros.inference.backends.base import check_precision, resolve_device
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.hybridnets import HybridNetsOutput


class TorchBackend:
    """Runs an ``nn.Module`` returning :class:`HybridNetsOutput`; outputs are always float32."""

    name = "torch"
    selection = "requested"

    def __init__(self, model: nn.Module, device: torch.device, precision: str, channels_last: bool = False) -> None:
        self.device = device
        self.precision = check_precision(precision, device)
        self.channels_last = channels_last
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        model = model.to(device=device, dtype=self.dtype).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    def forward(self, x: torch.Tensor) -> HybridNetsOutput:
        """(B,3,H,W) normalised float -> raw heads (float32, on ``device``)."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.inference_mode():
            x = x.to(device=self.device, dtype=self.dtype, memory_format=memory_format)
            out = self.model(x)
            return HybridNetsOutput(*(t.to(torch.float32) for t in out))


def create(
    model: nn.Module, config: ModelConfig, device: str | torch.device, precision: str, channels_last: bool = False
) -> TorchBackend:
    """Backend factory used by :func:`hybridnets_ros.inference.backends.create_backend`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"the torch backend needs a torch.nn.Module, got {type(model).__name__}")
    return TorchBackend(model, resolve_device(device), precision, channels_last=channels_last)
