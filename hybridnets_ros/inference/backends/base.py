"""What every inference backend provides, and the device/precision arguments they all accept."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from hybridnets_ros.model.hybridnets import HybridNetsOutput

# What a backend computes in; int8 only where the backend quantises (openvino, tensorrt).
PRECISIONS = ("fp32", "fp16", "int8")
# What a user may ask for: a precision, or "auto" (fp16 on CUDA, fp32 elsewhere; never int8, which costs accuracy).
PRECISION_CHOICES = ("auto", *PRECISIONS)


@runtime_checkable
class InferenceBackend(Protocol):
    """Runs the network: normalised (B,3,H,W) float32 on ``device`` -> raw heads, as :class:`HybridNets` returns them.

    The outputs are float32 tensors on ``device`` whatever the backend computes internally, so the shared
    pre- and post-processing never depend on the backend.
    """

    name: str
    device: torch.device
    precision: str
    # Why this backend runs: "requested", or the automatic choice's reason (set by ``create_backend``).
    selection: str

    def forward(self, x: torch.Tensor) -> HybridNetsOutput: ...


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` -> torch.device, checked to exist."""
    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ValueError(f"unsupported device '{device}': use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device '{device}' requested but CUDA is not available on this machine: use device 'cpu' or 'auto'"
        )
    index = resolved.index if resolved.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ValueError(
            f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device("cuda", index)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA, fp32 elsewhere; any other value is returned as given (checked by the backend)."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision '{precision}': use one of {list(PRECISION_CHOICES)}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


def check_precision(precision: str, device: torch.device) -> str:
    """Validate ``precision`` for ``device`` for a float-only backend: fp32 anywhere, fp16 only on CUDA."""
    if precision == "int8":
        raise ValueError("precision int8 is quantised by the openvino (CPU) and tensorrt (CUDA) backends only: use "
                         "one of those, or backend auto")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}': use one of {list(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision fp16 needs a CUDA device, but the device is '{device}': use precision fp32 on CPU"
        )
    return precision
