"""OpenVINO backend: the raw-heads ONNX model compiled by OpenVINO, by default for the CPU.

The model is reshaped to a static batch before compiling (one compiled model per batch size seen, compiled on
first use): static shapes let the CPU plugin pick its fastest kernels. Compiled blobs are cached (OpenVINO's
``CACHE_DIR``) next to the ONNX cache, so a second start skips most of the compile time.

Precision: ``fp32`` sets ``INFERENCE_PRECISION_HINT=f32``. This matters on CPUs with AMX/AVX512-BF16, where
OpenVINO's CPU plugin would otherwise silently run in bf16 (faster, but outside the fp32 tolerances).
The ``inference_precision`` option overrides the hint (e.g. ``bf16`` on such CPUs, ``f16`` on an Intel GPU);
``precision="fp16"`` means ``f16`` and is accepted for ``ov_device="GPU"`` only.

``precision="int8"``: the model is quantised once with NNCF post-training quantisation (8-bit weights and
activations where the CPU plugin has int8 kernels, the rest stays f32: the precision hint is f32 as for fp32) on
calibration frames (``calibration``: ``synthetic`` by default, or a folder, a video, a rosbag2 bag; see
:mod:`hybridnets_ros.inference.calibration`). The quantised model is cached as OpenVINO IR under a key of the ONNX
file's digest, the calibration inputs' digest and the NNCF/OpenVINO versions; a second start only recomputes the
calibration digest.

Options: ``onnx_path``, ``cache_dir``, ``ov_device`` (``CPU`` default, ``GPU``, ``AUTO``...), ``num_threads``
(``INFERENCE_NUM_THREADS``; 0 = OpenVINO's default), ``performance_hint`` (``LATENCY`` default or ``THROUGHPUT``),
``inference_precision``, ``calibration`` and ``calibration_frames`` (int8 only).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from hybridnets_ros.inference import calibration as calib
from hybridnets_ros.inference.backends.base import PRECISIONS, resolve_device
from hybridnets_ros.inference.backends.onnx_cache import cache_root, cached_raw_onnx, file_digest
from hybridnets_ros.inference.backends.optional_import import import_runtime
from hybridnets_ros.inference.export.exporter import RAW_OUTPUTS
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.hybridnets import HybridNetsOutput

LOG = logging.getLogger(__name__)

# int8: the quantised ops run in int8, everything else in f32 (never a silent bf16 on CPUs that have it).
_PRECISION_HINTS = {"fp32": "f32", "fp16": "f16", "int8": "f32"}
# Bump when the quantisation settings below change.
INT8_FORMAT_VERSION = 3
_CONVOLUTIONS = ("Convolution", "GroupConvolution")


def compile_config(precision_hint: str, performance_hint: str = "LATENCY", num_threads: int = 0) -> dict[str, str]:
    """The ``compile_model`` properties: performance hint, inference precision, optionally the thread count."""
    config = {"PERFORMANCE_HINT": performance_hint.upper(), "INFERENCE_PRECISION_HINT": precision_hint}
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = str(int(num_threads))
    return config


class OpenVinoBackend:
    """Compiled OpenVINO models by batch size; outputs are float32 CPU tensors."""

    name = "openvino"
    selection = "requested"

    def __init__(self, core, model_path: str, ov_device: str, compile_properties: dict[str, str],  # noqa: ANN001
                 input_hw: tuple[int, int], precision: str) -> None:
        self.core = core
        self.model_path = model_path  # ONNX, or OpenVINO IR (.xml) for int8
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
            model = self.core.read_model(self.model_path)
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


def int8_cache_key(onnx_digest: str, calibration_digest: str, ov_version: str, nncf_version: str) -> str:
    """A short hex key naming one quantised model; it changes with every argument."""
    identity = {"format": INT8_FORMAT_VERSION, "onnx": onnx_digest, "calibration": calibration_digest,
                "openvino": ov_version, "nncf": nncf_version}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def ancestors(model, output_names: tuple[str, ...]) -> dict[str, object]:  # noqa: ANN001 (openvino.Model)
    """Friendly name -> node of every node the named outputs depend on (outputs included)."""
    found: dict[str, object] = {}
    stack = [o.get_node() for o in model.outputs if o.get_any_name() in output_names]
    while stack:
        node = stack.pop()
        if node.get_friendly_name() not in found:
            found[node.get_friendly_name()] = node
            stack.extend(port.get_source_output().get_node() for port in node.inputs())
    return found


def output_convolutions(model) -> set[str]:  # noqa: ANN001 (openvino.Model)
    """Names of the last convolution on every path into the model's outputs (the heads' output layers)."""
    found, seen = set(), set()
    stack = [output.get_node() for output in model.outputs]
    while stack:
        node = stack.pop()
        if node.get_friendly_name() in seen:
            continue
        seen.add(node.get_friendly_name())
        if node.get_type_name() in _CONVOLUTIONS:
            found.add(node.get_friendly_name())
        else:
            stack.extend(port.get_source_output().get_node() for port in node.inputs())
    return found


def float_layers(model) -> list[str]:  # noqa: ANN001 (openvino.Model)
    """The convolutions INT8 leaves in float: the detection heads (every convolution only the regression and
    classification outputs depend on) and the segmentation head's output convolution."""
    detection = ancestors(model, RAW_OUTPUTS[:2])
    segmentation = ancestors(model, RAW_OUTPUTS[2:])
    heads = {name for name, node in detection.items()
             if name not in segmentation and node.get_type_name() in _CONVOLUTIONS}
    return sorted(heads | output_convolutions(model))


def quantize_int8(ov, onnx_path: Path, inputs: torch.Tensor, output: Path) -> Path:  # noqa: ANN001
    """NNCF post-training quantisation of the raw-heads ONNX model on ``inputs`` (N,3,H,W), saved as IR at
    ``output`` (.xml + .bin, written atomically: the .xml, which readers look for, is moved in last).

    What stays float, and why (measured on the bundled d0, README speed section): the detection heads (box deltas
    and scores are what the thresholds and NMS act on; quantising them cost 1.4 points of mAP@0.5, keeping them cost
    none) and the segmentation output convolution; depthwise convolutions (OpenVINO's CPU plugin runs them in f32
    anyway, so quantising them only added quantise/dequantise work). Activations are quantised asymmetrically
    (NNCF's MIXED preset), which kept more of the fp32 masks than symmetric.
    """
    nncf = import_runtime("nncf", "openvino int8")
    model = ov.Core().read_model(str(onnx_path))
    dataset = nncf.Dataset([inputs[i:i + 1].numpy() for i in range(inputs.shape[0])])
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)  # NNCF lists every layer it leaves unquantised at INFO
    try:
        quantized = nncf.quantize(model, dataset, subset_size=int(inputs.shape[0]),
                                  preset=nncf.QuantizationPreset.MIXED,
                                  ignored_scope=nncf.IgnoredScope(names=float_layers(model),
                                                                  types=["GroupConvolution"]))
    finally:
        nncf_logger.setLevel(level)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.stem}.") as tmp:
        tmp_xml = Path(tmp) / output.name
        # compress_to_fp16 off: the f32 parts keep their exact fp32 weights.
        ov.save_model(quantized, str(tmp_xml), compress_to_fp16=False)
        os.replace(tmp_xml.with_suffix(".bin"), output.with_suffix(".bin"))
        os.replace(tmp_xml, output)
    return output


def cached_int8_model(ov, onnx_path: Path, config: ModelConfig, source: str, frames: int,  # noqa: ANN001
                      cache_dir: str | os.PathLike | None = None) -> Path:
    """The quantised IR for ``onnx_path`` calibrated on ``frames`` frames of ``source``; quantised first (with log
    lines saying what and how long) when it is not cached."""
    nncf = import_runtime("nncf", "openvino int8")
    start = time.perf_counter()
    inputs, digest = calib.calibration_inputs(source, config, frames)
    key = int8_cache_key(file_digest(onnx_path), digest, ov.__version__, nncf.__version__)
    path = cache_root(cache_dir) / "openvino_int8" / f"{config.name}_int8_{key}.xml"
    if path.is_file() and path.with_suffix(".bin").is_file():
        LOG.info("using cached INT8 model %s (calibration '%s', %d frames, digest %s, read in %.1f s)", path, source,
                 inputs.shape[0], digest[:12], time.perf_counter() - start)
        return path
    LOG.warning("quantising '%s' to INT8 with NNCF %s on %d calibration frames from '%s'; this takes a while once, "
                "the model is cached at %s", config.name, nncf.__version__, inputs.shape[0], source, path)
    quantize_int8(ov, onnx_path, inputs, path)
    LOG.warning("INT8 quantisation finished in %.1f s", time.perf_counter() - start)
    return path


def build_int8_for_model(model: nn.Module, config: ModelConfig, calibration: str = calib.SYNTHETIC,
                         calibration_frames: int = calib.DEFAULT_FRAMES, cache_dir: str | os.PathLike | None = None,
                         onnx_path: str | os.PathLike | None = None) -> Path:
    """The quantised IR the backend runs for ``precision="int8"``, exported and quantised first when needed."""
    ov = import_runtime("openvino", "openvino")
    onnx_file = cached_raw_onnx(model, config, onnx_path=onnx_path, cache_dir=cache_dir)
    return cached_int8_model(ov, onnx_file, config, calibration, calibration_frames, cache_dir)


def copy_ir(xml: Path, output: Path) -> Path:
    """Copy an IR model (``xml`` and its .bin) to ``output`` (an .xml path; the .bin goes beside it)."""
    output = output.with_suffix(".xml")
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(xml.with_suffix(".bin"), output.with_suffix(".bin"))
    shutil.copyfile(xml, output)
    return output


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
    calibration: str = calib.SYNTHETIC,
    calibration_frames: int = calib.DEFAULT_FRAMES,
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
    if precision == "int8":
        path = build_int8_for_model(model, config, calibration, calibration_frames, cache_dir, onnx_path)
    else:
        path = cached_raw_onnx(model, config, onnx_path=onnx_path, cache_dir=cache_dir)
    core = ov.Core()
    core.set_property({"CACHE_DIR": str(cache_root(cache_dir) / "openvino")})
    hint = inference_precision or _PRECISION_HINTS[precision]
    backend = OpenVinoBackend(core, str(path), ov_device.upper(), compile_config(hint, performance_hint, num_threads),
                              tuple(config.input_size), precision)
    LOG.info("openvino %s backend on %s (%s, precision hint %s) from %s", ov.__version__, ov_device, precision, hint,
             path)
    return backend
