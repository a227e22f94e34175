"""OpenVINO backend: the raw-heads ONNX model compiled by OpenVINO, by default for the CPU.

The model is reshaped to a static batch before compiling (one compiled model per batch size seen, compiled on
first use): static shapes let the CPU plugin pick its fastest kernels. Compiled blobs are cached (OpenVINO's
``CACHE_DIR``) next to the ONNX cache, so a second start skips most of the compile time.

Precision: ``fp32`` sets ``INFERENCE_PRECISION_HINT=f32``. This matters on CPUs with AMX/AVX512-BF16, where
OpenVINO's CPU plugin would otherwise silently run in bf16 (faster, but outside the fp32 tolerances).
The ``inference_precision`` option overrides the hint (e.g. ``bf16`` on such CPUs, ``f16`` on an Intel GPU);
``precision="fp16"`` means ``f16`` and is accepted for ``ov_device="GPU"`` only.

Options: ``onnx_path``, ``cache_dir``, ``ov_device`` (``CPU`` default, ``GPU``, ``AUTO``...), ``num_threads``
(``INFERENCE_NUM_THREADS``; 0 = OpenVINO's default), ``performance_hint`` (``LATENCY`` default or ``THROUGHPUT``),
``inference_precision``.
"""
from __future__ import annotations

import logging
import os
import time

import torch
from torch import nn

from hybridnets_ros.inference.backends.base import PRECISIONS, resolve_device
from hybridnets_ros.inference.backends.onnx_cache import cache_root, cached_raw_onnx
from hybridnets_ros.inference.backends.optional_import import import_runtime
from hybridnets_ros.inference.onnx_graph import RAW_OUTPUTS
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.hybridnets import HybridNetsOutput

LOG = logging.getLogger(__name__)

_PRECISION_HINTS = {"fp32": "f32", "fp16": "f16"}


def compile_config(precision_hint: str, performance_hint: str = "LATENCY", num_threads: int = 0) -> dict[str, str]:
    """The ``compile_model`` properties: performance hint, inference precision, optionally the thread count."""
    config = {"PERFORMANCE_HINT": performance_hint.upper(), "INFERENCE_PRECISION_HINT": precision_hint}
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = str(int(num_threads))
    return config


class OpenVinoBackend:
    """Compiled OpenVINO models by batch size; outputs are float32 CPU tensors."""

    name = "openvino"

    def __init__(self, core, onnx_path: str, ov_device: str, compile_properties: dict[str, str],  # noqa: ANN001
                 input_hw: tuple[int, int], precision: str) -> None:
        self.core = core
        self.onnx_path = onnx_path
        self.ov_device = ov_device
        self.compile_properties = compile_properties
        self.input_hw = input_hw
        self.device = torch.device("cpu")
        self.precision = precision
        self._requests: dict[int, tuple[object, list]] = {}

    def _request(self, batch: int):  # noqa: ANN202
        """(infer request, outputs in RAW_OUTPUTS order) for a static batch size, compiled on first use."""
        if batch not in self._requests:
            start = time.perf_counter()
            model = self.core.read_model(self.onnx_path)
            model.reshape({model.input(0).get_any_name(): [batch, 3, *self.input_hw]})
            compiled = self.core.compile_model(model, self.ov_device, self.compile_properties)
            outputs = [compiled.output(name) for name in RAW_OUTPUTS]
            self._requests[batch] = (compiled.create_infer_request(), outputs)
            LOG.info("OpenVINO compiled the model for %s, batch %d, in %.1f s (%s)", self.ov_device, batch,
                     time.perf_counter() - start, self.compile_properties)
        return self._requests[batch]

    def forward(self, x: torch.Tensor) -> HybridNetsOutput:
        """(B,3,H,W) normalised float32 -> raw heads (float32 CPU tensors)."""
        x = x.to("cpu", torch.float32).contiguous()
        request, outputs = self._request(int(x.shape[0]))
        request.infer({0: x.numpy()}, share_inputs=True)
        # The request owns the output buffers and reuses them on the next call: copy out.
        return HybridNetsOutput(*(torch.from_numpy(request.get_tensor(o).data.copy()) for o in outputs))


def create(
    model: nn.Module,
    config: ModelConfig,
    device: str | torch.device,
    precision: str,
    onnx_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    ov_device: str = "CPU",
    num_threads: int = 0,
    performance_hint: str = "LATENCY",
    inference_precision: str | None = None,
) -> OpenVinoBackend:
    """Backend factory used by :func:`hybridnets_ros.inference.backends.create_backend`."""
    ov = import_runtime("openvino", "openvino")
    if resolve_device(device).type != "cpu":
        raise ValueError(f"the openvino backend returns its outputs on the CPU: use device cpu (got '{device}'); "
                         "pick OpenVINO's own device with the ov_device option (CPU, GPU, AUTO)")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}': use one of {list(PRECISIONS)}")
    if precision == "fp16" and not ov_device.upper().startswith("GPU"):
        raise ValueError("the openvino backend runs fp16 on ov_device GPU only: use precision fp32 on the CPU "
                         "(or inference_precision bf16 on CPUs with AMX/AVX512-BF16)")
    path = cached_raw_onnx(model, config, onnx_path=onnx_path, cache_dir=cache_dir)
    core = ov.Core()
    core.set_property({"CACHE_DIR": str(cache_root(cache_dir) / "openvino")})
    hint = inference_precision or _PRECISION_HINTS[precision]
    backend = OpenVinoBackend(core, str(path), ov_device.upper(), compile_config(hint, performance_hint, num_threads),
                              tuple(config.input_size), precision)
    LOG.info("openvino %s backend on %s (precision hint %s) from %s", ov.__version__, ov_device, hint, path)
    return backend
