"""TensorRT backend (CUDA): an engine built from the raw-heads ONNX model, cached on disk.

Building an engine takes minutes and an engine only runs on the GPU model and TensorRT version it was built with,
so engines are cached under a key of: GPU name and compute capability, TensorRT version, input shape, batch range,
precision and the sha256 of the ONNX file (which itself is keyed by the weights). A stale engine is never loaded:
anything that changes gives another file name. ``hybridnets-export --tensorrt-engine`` builds one ahead of time.

The engine takes any batch from 1 to ``max_batch`` (an optimisation profile); its inputs and outputs stay float32
(fp16 or int8 is used inside), and it runs on torch's current CUDA stream with torch-allocated buffers.

``precision="int8"``: TensorRT's entropy calibration (``IInt8EntropyCalibrator2``) over calibration frames
(``calibration``: ``synthetic`` by default, or a folder, a video, a rosbag2 bag; see
:mod:`hybridnets_ros.inference.calibration`); layers without int8 kernels stay fp32. The calibration inputs' digest
is part of the engine's cache key. Written to the TensorRT 8.6/10 Python API; not yet run on a GPU.

Options: ``onnx_path``, ``cache_dir``, ``max_batch`` (default 1), ``workspace_gb`` (default 2), ``calibration`` and
``calibration_frames`` (int8 only).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from hybridnets_ros.inference import calibration as calib
from hybridnets_ros.inference.backends.base import check_precision, resolve_device
from hybridnets_ros.inference.backends.onnx_cache import cache_root, cached_raw_onnx, file_digest
from hybridnets_ros.inference.backends.optional_import import import_runtime
from hybridnets_ros.inference.export.exporter import RAW_INPUTS, RAW_OUTPUTS
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.hybridnets import HybridNetsOutput

LOG = logging.getLogger(__name__)

_INSTALL_HINT = "NVIDIA's wheels: pip install tensorrt-cu12 (or tensorrt-cu13) to match your CUDA; needs an NVIDIA GPU"


def engine_cache_key(
    gpu_name: str,
    compute_capability: Sequence[int],
    trt_version: str,
    input_shape: Sequence[int],
    max_batch: int,
    precision: str,
    onnx_digest: str,
    calibration_digest: str | None = None,
) -> str:
    """A short hex key naming one engine; it changes with every argument (``calibration_digest``: int8 only)."""
    identity = {
        "calibration": calibration_digest,
        "gpu": gpu_name,
        "sm": list(compute_capability),
        "tensorrt": trt_version,
        "input": list(input_shape),
        "max_batch": int(max_batch),
        "precision": precision,
        "onnx": onnx_digest,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def _trt():  # noqa: ANN202
    return import_runtime("tensorrt", "tensorrt", _INSTALL_HINT)


def int8_calibrator(trt, inputs: torch.Tensor, device: torch.device):  # noqa: ANN001, ANN201
    """An ``IInt8EntropyCalibrator2`` feeding ``inputs`` (N,3,H,W) one frame at a time from a CUDA buffer."""

    class FrameCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind base: initialised explicitly
            self.next_index = 0
            self.buffer = torch.empty((1, *inputs.shape[1:]), dtype=torch.float32, device=device)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:  # noqa: ARG002 (one input)
            if self.next_index >= inputs.shape[0]:
                return None
            self.buffer.copy_(inputs[self.next_index:self.next_index + 1])
            torch.cuda.synchronize(device)  # TensorRT reads the buffer on its own stream
            self.next_index += 1
            return [int(self.buffer.data_ptr())]

        def read_calibration_cache(self) -> None:
            return None  # the engine itself is cached under the calibration digest

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

    return FrameCalibrator()


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    precision: str,
    max_batch: int,
    input_hw: Sequence[int],
    workspace_gb: float = 2.0,
    calibration_inputs: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> Path:
    """Build a serialized engine from a raw-heads ONNX file and write it atomically to ``engine_path``
    (int8: calibrated on ``calibration_inputs`` (N,3,H,W), copied to ``device`` frame by frame)."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:
        # TensorRT 8/9 need explicit batch asked for; 10 has nothing else and deprecates the flag.
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16":
        builder_config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    h, w = (int(v) for v in input_hw)
    # Optimised for batch 1 (the node's latency case); larger batches up to max_batch still run.
    profile.set_shape(RAW_INPUTS[0], (1, 3, h, w), (1, 3, h, w), (max_batch, 3, h, w))
    builder_config.add_optimization_profile(profile)
    if precision == "int8":
        if calibration_inputs is None or device is None:
            raise ValueError("an int8 engine needs calibration inputs and their CUDA device")
        builder_config.set_flag(trt.BuilderFlag.INT8)
        # Held in a local too: TensorRT keeps no Python reference, and the build calls back into it.
        calibrator = int8_calibrator(trt, calibration_inputs, device)
        builder_config.int8_calibrator = calibrator
        # Calibration runs at batch 1 whatever the profile admits.
        calibration_profile = builder.create_optimization_profile()
        calibration_profile.set_shape(RAW_INPUTS[0], (1, 3, h, w), (1, 3, h, w), (1, 3, h, w))
        builder_config.set_calibration_profile(calibration_profile)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT messages above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{engine_path.name}.", suffix=".tmp", dir=engine_path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(serialized)
        os.replace(tmp, engine_path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return engine_path


def cached_engine(
    onnx_path: Path,
    config: ModelConfig,
    device: torch.device,
    precision: str,
    max_batch: int,
    cache_dir: str | os.PathLike | None = None,
    workspace_gb: float = 2.0,
    calibration: tuple[torch.Tensor, str] | None = None,
) -> Path:
    """The cached engine for these settings, built first (with a log line, it takes minutes) when missing.
    ``calibration``: (inputs (N,3,H,W), their digest), int8 only."""
    trt = _trt()
    gpu = torch.cuda.get_device_name(device)
    inputs, digest = calibration if calibration is not None else (None, None)
    key = engine_cache_key(gpu, torch.cuda.get_device_capability(device), trt.__version__,
                           (3, *config.input_size), max_batch, precision, file_digest(onnx_path), digest)
    path = cache_root(cache_dir) / "tensorrt" / f"{config.name}_{precision}_b{max_batch}_{key}.engine"
    if path.is_file():
        LOG.info("using cached TensorRT engine %s", path)
        return path
    LOG.warning("building a TensorRT %s engine for %s (TensorRT %s, batch 1..%d, input %dx%d) from %s; this takes "
                "several minutes once, the engine is cached at %s", precision, gpu, trt.__version__, max_batch,
                *config.input_size, onnx_path, path)
    start = time.perf_counter()
    build_engine(onnx_path, path, precision, max_batch, config.input_size, workspace_gb, inputs, device)
    LOG.warning("TensorRT engine built in %.0f s", time.perf_counter() - start)
    return path


class TensorRtBackend:
    """One execution context over a deserialized engine; float32 I/O on torch's current stream."""

    name = "tensorrt"
    selection = "requested"

    def __init__(self, engine, device: torch.device, precision: str, max_batch: int) -> None:  # noqa: ANN001
        self.engine = engine
        self.context = engine.create_execution_context()
        self.device = device
        self.precision = precision
        self.max_batch = max_batch

    def forward(self, x: torch.Tensor) -> HybridNetsOutput:
        """(B,3,H,W) normalised float32, B <= max_batch -> raw heads (float32, on ``device``)."""
        if x.shape[0] > self.max_batch:
            raise ValueError(f"batch {x.shape[0]} exceeds the TensorRT engine's max_batch {self.max_batch}: "
                             "create the backend with a larger max_batch (this builds another engine)")
        x = x.to(self.device, torch.float32).contiguous()
        context = self.context
        context.set_input_shape(RAW_INPUTS[0], tuple(x.shape))
        context.set_tensor_address(RAW_INPUTS[0], x.data_ptr())
        outputs = []
        for name in RAW_OUTPUTS:
            out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch.float32, device=self.device)
            context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed (see the TensorRT messages above)")
        return HybridNetsOutput(*outputs)


def load_engine(path: Path):  # noqa: ANN201
    """Deserialize an engine file; RuntimeError naming the file when TensorRT rejects it."""
    trt = _trt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise RuntimeError(f"TensorRT cannot load the engine {path}; delete it to have it rebuilt")
    return engine


def build_engine_for_model(
    model: nn.Module,
    config: ModelConfig,
    device: str | torch.device = "cuda",
    precision: str = "fp16",
    max_batch: int = 1,
    cache_dir: str | os.PathLike | None = None,
    onnx_path: str | os.PathLike | None = None,
    workspace_gb: float = 2.0,
    opset: int | None = None,
    exporter: str | None = None,
    calibration: str = calib.SYNTHETIC,
    calibration_frames: int = calib.DEFAULT_FRAMES,
) -> Path:
    """The engine file the backend uses for these settings, exported and built if needed (build-only mode)."""
    trt = _trt()
    device = resolve_device(device)
    if device.type != "cuda":
        raise ValueError(f"the tensorrt backend needs a CUDA device, got '{device}'")
    if precision != "int8":
        check_precision(precision, device)
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if int(trt.__version__.split(".")[0]) < 10 and opset is None and exporter is None:
        # TensorRT 8.x (JetPack 5) parses ONNX up to opset 17, below what the dynamo exporter writes.
        opset, exporter = 17, "torchscript"
    onnx_file = cached_raw_onnx(model, config, onnx_path=onnx_path, cache_dir=cache_dir, opset=opset,
                                exporter=exporter)
    calibration_set = calib.calibration_inputs(calibration, config, calibration_frames) if precision == "int8" else None
    with torch.cuda.device(device):
        return cached_engine(onnx_file, config, device, precision, max_batch, cache_dir, workspace_gb, calibration_set)


def create(
    model: nn.Module,
    config: ModelConfig,
    device: str | torch.device,
    precision: str,
    onnx_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    max_batch: int = 1,
    workspace_gb: float = 2.0,
    calibration: str = calib.SYNTHETIC,
    calibration_frames: int = calib.DEFAULT_FRAMES,
) -> TensorRtBackend:
    """Backend factory used by :func:`hybridnets_ros.inference.backends.create_backend`."""
    engine_path = build_engine_for_model(model, config, device, precision, max_batch, cache_dir, onnx_path,
                                         workspace_gb, calibration=calibration, calibration_frames=calibration_frames)
    device = resolve_device(device)
    with torch.cuda.device(device):
        backend = TensorRtBackend(load_engine(engine_path), device, precision, max_batch)
    LOG.info("tensorrt %s backend on %s (%s, batch <= %d) from %s", _trt().__version__,
             torch.cuda.get_device_name(device), precision, max_batch, engine_path)
    return backend
