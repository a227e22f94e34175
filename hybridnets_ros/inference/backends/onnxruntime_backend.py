"""ONNX Runtime backend: the raw-heads ONNX model on the CPU or CUDA execution provider.

Options (``create_backend("onnxruntime", ..., **options)``):
``onnx_path`` (use this raw-heads file instead of the cache), ``cache_dir``, ``intra_op_threads`` and
``inter_op_threads`` (0 = ONNX Runtime's default: one thread per physical core).
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import nn

from hybridnets_ros.inference.backends.base import check_precision, resolve_device
from hybridnets_ros.inference.backends.onnx_cache import cached_raw_onnx
from hybridnets_ros.inference.backends.optional_import import import_runtime
from hybridnets_ros.inference.export.exporter import RAW_INPUTS, RAW_OUTPUTS
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.hybridnets import HybridNetsOutput

LOG = logging.getLogger(__name__)

class OnnxRuntimeBackend:
    """An ``InferenceSession`` over the raw-heads model; outputs are float32 tensors on ``device``.

    On CUDA the input and outputs are bound to torch tensors on the GPU (I/O binding), so nothing is copied
    through host memory.
    """

    name = "onnxruntime"
    selection = "requested"

    def __init__(self, session, device: torch.device, precision: str) -> None:  # noqa: ANN001 (optional package)
        self.session = session
        self.device = device
        self.precision = precision
        self._output_shapes = {o.name: o.shape for o in session.get_outputs()}

    def forward(self, x: torch.Tensor) -> HybridNetsOutput:
        """(B,3,H,W) normalised float32 -> raw heads (float32, on ``device``)."""
        x = x.to(self.device, torch.float32).contiguous()
        if self.device.type == "cuda":
            return self._forward_bound(x)
        outputs = self.session.run(list(RAW_OUTPUTS), {RAW_INPUTS[0]: x.numpy()})
        return HybridNetsOutput(*(torch.from_numpy(np.ascontiguousarray(o)) for o in outputs))

    def _forward_bound(self, x: torch.Tensor) -> HybridNetsOutput:
        binding = self.session.io_binding()
        index = self.device.index or 0
        binding.bind_input(RAW_INPUTS[0], "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        outputs = []
        for name in RAW_OUTPUTS:
            # Symbolic dims are the batch; the rest are static in the exported model.
            shape = tuple(d if isinstance(d, int) else x.shape[0] for d in self._output_shapes[name])
            out = torch.empty(shape, dtype=torch.float32, device=self.device)
            binding.bind_output(name, "cuda", index, np.float32, shape, out.data_ptr())
            outputs.append(out)
        # ORT runs on its own stream: the input must be complete before it starts.
        torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        return HybridNetsOutput(*outputs)


def session_options(ort, intra_op_threads: int = 0, inter_op_threads: int = 0):  # noqa: ANN001, ANN201
    """Full graph optimisation, sequential execution (one model, latency first), the given thread counts."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(intra_op_threads)
    options.inter_op_num_threads = int(inter_op_threads)
    return options


def providers_for(ort, device: torch.device) -> list:  # noqa: ANN001
    """Execution providers for ``device``; ValueError when CUDA is asked for but this onnxruntime has no CUDA EP."""
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ValueError(
            f"the onnxruntime backend on {device} needs the CUDA execution provider, but this onnxruntime has only "
            f"{available}: pip install onnxruntime-gpu (instead of onnxruntime), or use device cpu"
        )
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


def create(
    model: nn.Module,
    config: ModelConfig,
    device: str | torch.device,
    precision: str,
    onnx_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
) -> OnnxRuntimeBackend:
    """Backend factory used by :func:`hybridnets_ros.inference.backends.create_backend`."""
    ort = import_runtime("onnxruntime", "onnxruntime", "pip install onnxruntime-gpu instead for CUDA")
    device = resolve_device(device)
    check_precision(precision, device)
    if precision != "fp32":
        raise ValueError("the onnxruntime backend runs the fp32 model only: use precision fp32, or the tensorrt "
                         "backend for fp16")
    path = cached_raw_onnx(model, config, onnx_path=onnx_path, cache_dir=cache_dir)
    session = ort.InferenceSession(
        str(path), sess_options=session_options(ort, intra_op_threads, inter_op_threads),
        providers=providers_for(ort, device),
    )
    LOG.info("onnxruntime %s session on %s (%s) from %s", ort.__version__, device, session.get_providers()[0], path)
    return OnnxRuntimeBackend(session, device, precision)
