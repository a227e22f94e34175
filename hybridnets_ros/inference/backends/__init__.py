"""Inference backends by name; each lives in its own module, imported only when asked for."""
from __future__ import annotations

import importlib
from typing import Any

import torch

from hybridnets_ros.inference.backends.base import InferenceBackend, check_precision, resolve_device
from hybridnets_ros.model.config import ModelConfig

# name -> module in this package exposing create(model, config, device, precision, **options)
BACKEND_MODULES = {
    "torch": "torch_backend",
    "onnxruntime": "onnxruntime_backend",
    "openvino": "openvino_backend",
    "tensorrt": "tensorrt_backend",
}

__all__ = ["BACKEND_MODULES", "InferenceBackend", "check_precision", "create_backend", "resolve_device"]


def create_backend(
    name: str,
    model: Any,
    config: ModelConfig,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    **options: Any,
) -> InferenceBackend:
    """The backend ``name`` running ``model`` (a :class:`HybridNets`) on ``device`` at ``precision``.

    ``options`` go to the backend's ``create`` (e.g. ``channels_last`` for torch).
    """
    module_name = BACKEND_MODULES.get(name)
    if module_name is None:
        raise ValueError(f"unknown inference backend '{name}': valid backends are {sorted(BACKEND_MODULES)}")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return module.create(model, config, resolve_device(device), precision, **options)
