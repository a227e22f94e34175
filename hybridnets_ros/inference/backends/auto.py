"""``backend: auto``: the fastest backend this machine can run, and why it was chosen.

On CUDA: TensorRT when it is importable (its engine is built once and cached), else eager torch. On the CPU:
OpenVINO when importable, else ONNX Runtime, else torch (measured on the bundled model, 2-core AMD EPYC, 1280x720:
the ONNX runtimes need about 0.4x torch's time per frame; see the README's speed section). A backend that is
importable but fails to start (an export error, say) is skipped with a warning naming the error, and the next one
runs. int8 is quantised by OpenVINO (CPU) and TensorRT (CUDA) only, so for int8 those are the only candidates.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# backend name -> the Python modules it needs (the ONNX-based ones also export with onnx)
REQUIRED_MODULES = {
    "tensorrt": ("tensorrt", "onnx"),
    "openvino": ("openvino", "onnx"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "torch": (),
}
# Fastest first, by device type and precision.
_CANDIDATES = {
    ("cuda", "int8"): ("tensorrt",),
    ("cuda", "fp16"): ("tensorrt", "torch"),
    ("cuda", "fp32"): ("tensorrt", "torch"),
    ("cpu", "int8"): ("openvino",),
    ("cpu", "fp32"): ("openvino", "onnxruntime", "torch"),
    # fp16 on the CPU is no backend's: torch is tried so that its error message says what to do.
    ("cpu", "fp16"): ("torch",),
}


@dataclass(frozen=True)
class Candidate:
    """A backend ``auto`` may run, with the reason it is considered (or why not, when ``available`` is False)."""

    name: str
    available: bool
    note: str


def missing_module(names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that cannot be imported, as 'module (error)', or None when all import."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return f"{name} ({exc})"
    return None


def candidates(device: torch.device, precision: str) -> list[Candidate]:
    """The backends ``auto`` would try for ``device`` and ``precision`` (a resolved one), fastest first."""
    names = _CANDIDATES.get((device.type, precision))
    if names is None:
        raise ValueError(f"backend auto has no backend for precision '{precision}' on {device}")
    found = []
    for name in names:
        missing = missing_module(REQUIRED_MODULES[name])
        note = f"{name} cannot be imported: {missing}" if missing else f"{name} is installed"
        found.append(Candidate(name, missing is None, note))
    return found


def describe_choice(chosen: str, device: torch.device, precision: str, skipped: list[str]) -> str:
    """The one-line reason shown in the log and in /diagnostics, e.g.
    'auto on cpu fp32: openvino (fastest installed)' or '... torch (openvino cannot be imported: ...)'."""
    why = "; ".join(skipped) if skipped else "fastest installed"
    return f"auto on {device.type} {precision}: {chosen} ({why})"


def accepted_options(create: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that a backend's ``create`` takes (auto passes e.g. ``cache_dir`` to the ONNX
    backends but not to torch)."""
    parameters = inspect.signature(create).parameters
    return {k: v for k, v in options.items() if k in parameters}
