"""Inference backends by name; each lives in its own module, imported only when asked for."""
from __future__ import annotations

import argparse
import importlib
import logging
from typing import Any

import torch

from hybridnets_ros.inference.backends import auto
from hybridnets_ros.inference.backends.base import (
    PRECISION_CHOICES,
    InferenceBackend,
    check_precision,
    resolve_device,
    resolve_precision,
)
from hybridnets_ros.inference.calibration import SYNTHETIC
from hybridnets_ros.model.config import ModelConfig

LOG = logging.getLogger(__name__)

# name -> module in this package exposing create(model, config, device, precision, **options)
BACKEND_MODULES = {
    "torch": "torch_backend",
    "onnxruntime": "onnxruntime_backend",
    "openvino": "openvino_backend",
    "tensorrt": "tensorrt_backend",
}

# What a user may ask for: a backend by name, or "auto" (see backends/auto.py).
BACKEND_CHOICES = ("auto", *BACKEND_MODULES)

__all__ = ["BACKEND_CHOICES", "BACKEND_MODULES", "InferenceBackend", "add_backend_arguments", "check_precision",
           "create_backend", "resolve_device"]


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --backend, --precision and --calibration: where and how a command runs the network."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                        help="auto: TensorRT (else torch) on CUDA; OpenVINO, else ONNX Runtime, else torch on the CPU")
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                        help="auto (fp16 on CUDA, else fp32), fp32, fp16 (CUDA) or int8 (openvino, tensorrt)")
    parser.add_argument("--calibration", default=SYNTHETIC,
                        help="int8 only: calibration frames: synthetic, a folder of images, a video or a rosbag2 bag")


def create_backend(
    name: str,
    model: Any,
    config: ModelConfig,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    **options: Any,
) -> InferenceBackend:
    """The backend ``name`` (or ``auto``) running ``model`` (a :class:`HybridNets`) on ``device`` at ``precision``
    (or ``auto``: fp16 on CUDA, fp32 elsewhere).

    ``options`` go to the backend's ``create`` (e.g. ``channels_last`` for torch, ``calibration`` for int8); with
    ``auto`` only the options the chosen backend's ``create`` takes are passed. The backend's ``selection`` says
    why it runs; the automatic choice is logged.
    """
    if name != "auto" and name not in BACKEND_MODULES:
        raise ValueError(f"unknown inference backend '{name}': valid backends are {sorted(BACKEND_MODULES)} or auto")
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    if name != "auto":
        backend = _module(name).create(model, config, device, precision, **options)
        backend.selection = "requested"
        return backend
    skipped: list[str] = []
    tried = [c for c in auto.candidates(device, precision) if c.available or skipped.append(c.note)]
    if not tried:
        raise ValueError(f"backend auto found no backend for {precision} on {device}: {'; '.join(skipped)}")
    for position, candidate in enumerate(tried):
        module = _module(candidate.name)
        try:
            backend = module.create(model, config, device, precision, **auto.accepted_options(module.create, options))
        except Exception as exc:  # noqa: BLE001 - auto goes on with the next backend, saying why
            if position == len(tried) - 1:
                raise
            skipped.append(f"{candidate.name} failed to start: {type(exc).__name__}: {exc}")
            LOG.warning("backend auto: %s; trying %s next", skipped[-1], tried[position + 1].name)
            continue
        backend.selection = auto.describe_choice(candidate.name, device, precision, skipped)
        LOG.info("backend %s", backend.selection)
        return backend
    raise AssertionError("unreachable: the last candidate returns or raises")


def _module(name: str) -> Any:
    return importlib.import_module(f"{__name__}.{BACKEND_MODULES[name]}")
