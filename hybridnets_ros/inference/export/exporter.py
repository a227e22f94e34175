"""The ONNX exporter library: a checkpoint's network written to one ONNX file, and that file's metadata read back.

Two variants:

* ``postprocessed`` (default): the export of :class:`~hybridnets_ros.inference.predictor.HybridNetsPredictor`:
  letterboxed uint8 images in; final detections (network-input pixels), their count and the uint8 segmentation class
  map out (the exact convention is in :mod:`hybridnets_ros.inference.predictor`). Anchors, decoding, clipping, NMS
  and the class map live in the graph, so a consumer needs nothing HybridNets-specific beyond letterboxing.
* ``raw``: normalised float images in; the three heads out, as the torch model returns them. The ONNX Runtime,
  OpenVINO and TensorRT backends run this one, so the predictor's pre- and post-processing stay shared.

The input is static (the model config's input size); the batch is dynamic unless ``batch`` fixes it. NMS is the
custom op :func:`~hybridnets_ros.inference.nms.onnx_non_max_suppression`, which both exporters translate here to
the ONNX ``NonMaxSuppression`` op.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.onnx import symbolic_helper

import hybridnets_ros
from hybridnets_ros.conventions import PAD_VALUE, DetectionThresholds
from hybridnets_ros.inference.backends.optional_import import import_runtime
from hybridnets_ros.inference.predictor import HybridNetsPredictor
from hybridnets_ros.model.config import ModelConfig

RAW_INPUTS = ("images",)
RAW_OUTPUTS = ("regression", "classification", "segmentation")
POSTPROCESSED_INPUTS = ("images",)
POSTPROCESSED_OUTPUTS = ("detections", "num_detections", "seg_classes")
VARIANTS = ("postprocessed", "raw")
EXPORTERS = ("dynamo", "torchscript")
# The dynamo exporter implements opset 18 (it cannot down-convert this model's Pad to 17); ONNX Runtime, OpenVINO
# and TensorRT 10 read it (the tensorrt backend falls back to the TorchScript exporter, opset 17, for TensorRT 8).
DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18
DEFAULT_EXPORTER = "dynamo"
NMS_OPSET = 10  # NonMaxSuppression exists from opset 10; the symbolic is valid for every later opset
METADATA_PREFIX = "hybridnets_ros."
# Largest batch the dynamo exporter's symbolic batch dimension admits; backends pick their own limits below it.
_MAX_DYNAMIC_BATCH = 1024
_NOISY_LOGGERS = ("torch.onnx._internal.exporter._registration", "onnx_ir")


@symbolic_helper.parse_args("v", "v", "i", "f", "f")
def _nms_symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):  # noqa: ANN001, ANN202
    """TorchScript-exporter translation of the custom op to ``NonMaxSuppression``."""
    return g.op(
        "NonMaxSuppression",
        boxes,
        scores,
        g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64)),
        g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32)),
        g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32)),
    )


torch.onnx.register_custom_op_symbolic("hybridnets_export::non_max_suppression", _nms_symbolic, NMS_OPSET)


def dynamo_translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``: the custom op -> ``NonMaxSuppression``."""
    from onnxscript import opset18 as op

    def nms_onnx(boxes, scores, max_per_class: int, iou_threshold: float,  # noqa: ANN001, ANN202
                 score_threshold: float):
        return op.NonMaxSuppression(
            boxes,
            scores,
            op.Constant(value_ints=[max_per_class]),
            op.Constant(value_floats=[iou_threshold]),
            op.Constant(value_floats=[score_threshold]),
        )

    return {torch.ops.hybridnets_export.non_max_suppression.default: nms_onnx}


class RawHeads(nn.Module):
    """The network with a plain tuple output: normalised (B,3,H,W) float32 -> (regression, classification, seg)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(images)
        return out.regression, out.classification, out.segmentation


def cpu_fp32(model: nn.Module) -> nn.Module:
    """``model`` in eval mode if it is all float32 on CPU, else an eval-mode float32 CPU copy (the caller's model
    is never moved)."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point()) for t in tensors):
        return model.eval()
    return copy.deepcopy(model).to("cpu", torch.float32).eval()


def export_wrapper(
    model: nn.Module, config: ModelConfig, variant: str, postprocess: DetectionThresholds | None = None
) -> nn.Module:
    """The module that is exported for ``variant`` (eval mode, on the model's device)."""
    if variant == "raw":
        return RawHeads(model).eval()
    if variant == "postprocessed":
        return HybridNetsPredictor(config, postprocess, network=model).eval()
    raise ValueError(f"unknown ONNX variant '{variant}': use one of {list(VARIANTS)}")


def example_input(config: ModelConfig, variant: str, batch: int) -> torch.Tensor:
    """A (batch,3,H,W) input of the variant's dtype: normalised float32 (raw) or uint8 images (postprocessed)."""
    generator = torch.Generator().manual_seed(0)
    shape = (batch, 3, *config.input_size)
    if variant == "raw":
        return torch.randn(shape, generator=generator)
    return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)


def _metadata(config: ModelConfig, variant: str, postprocess: DetectionThresholds | None, batch: int | None) -> dict:
    h, w = config.input_size
    meta = {
        "version": hybridnets_ros.__version__,
        "variant": variant,
        "model_config": json.dumps(config.to_dict()),
        "class_names": json.dumps(list(config.obj_list)),
        "seg_class_names": json.dumps(["background", *config.seg_list]),
        "batch": "dynamic" if batch is None else str(batch),
    }
    if variant == "raw":
        meta["input"] = (f"images: (B,3,{h},{w}) float32 RGB, letterboxed (pad {PAD_VALUE}), x/255 then (x-mean)/std "
                         f"with mean {list(config.mean)} std {list(config.std)}")
        meta["outputs"] = ("regression (B,N,4) dy,dx,dh,dw; classification (B,N,C) probabilities; "
                           "segmentation (B,S,H,W) logits")
    else:
        meta["input"] = f"images: (B,3,{h},{w}) uint8 RGB, letterboxed to {h}x{w} with pad value {PAD_VALUE}"
        meta["outputs"] = ("detections (B,K,6) float32 [x1,y1,x2,y2,score,class_id] in input pixels by descending "
                           "score, rows >= num_detections are zero; num_detections (B,) int64; "
                           "seg_classes (B,H,W) uint8 (0 background, k = seg_class_names[k])")
        meta["postprocess"] = json.dumps(dataclasses.asdict(postprocess or DetectionThresholds()))
    return {METADATA_PREFIX + k: v for k, v in meta.items()}


def _export_torchscript(wrapper: nn.Module, example: torch.Tensor, path: Path, names: tuple, opset: int,
                        dynamic: bool) -> None:
    inputs, outputs = names
    axes = {name: {0: "batch"} for name in (*inputs, *outputs)} if dynamic else None
    with warnings.catch_warnings():
        # The exporter announces its own deprecation, the tracer notes that the static input size becomes a
        # constant (the padding arithmetic), which is intended: the input size is fixed, and constant folding
        # skips strided slices, which only leaves them as Slice ops.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=opset, input_names=list(inputs),
                          output_names=list(outputs), dynamic_axes=axes)


def _export_dynamo(wrapper: nn.Module, example: torch.Tensor, path: Path, names: tuple, opset: int,
                   dynamic: bool) -> None:
    inputs, outputs = names
    shapes = {inputs[0]: {0: torch.export.Dim("batch", min=1, max=_MAX_DYNAMIC_BATCH)}} if dynamic else None
    with _quiet_dynamo_exporter():
        program = torch.onnx.export(wrapper, (example,), dynamo=True, opset_version=opset, input_names=list(inputs),
                                    output_names=list(outputs), dynamic_shapes=shapes, verbose=False,
                                    custom_translation_table=dynamo_translation_table(), external_data=False)
    program.save(str(path), external_data=False)


@contextlib.contextmanager
def _quiet_dynamo_exporter() -> Iterator[None]:
    """Silence the exporter's known harmless notices: torchvision ops it cannot register (no torchvision here),
    a pytree deprecation inside torch, and an untyped empty attribute in onnx_ir."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def export_onnx(
    model: nn.Module,
    config: ModelConfig,
    output: str | os.PathLike,
    *,
    variant: str = "postprocessed",
    opset: int = DEFAULT_OPSET,
    batch: int | None = None,
    postprocess: DetectionThresholds | None = None,
    exporter: str = DEFAULT_EXPORTER,
) -> Path:
    """Export ``model`` (a HybridNets) to a single ONNX file at ``output`` and return its path.

    ``batch`` None makes the batch dimension dynamic. ``postprocess`` fixes the thresholds of the postprocessed
    variant. The file is written atomically (a crash never leaves a truncated model behind) and carries the model
    config, class names and the I/O convention as metadata (``hybridnets_ros.*`` keys).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter '{exporter}': use one of {list(EXPORTERS)}")
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be >= 1 (or None for a dynamic batch), got {batch}")
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise ValueError(f"the dynamo exporter writes opset {DYNAMO_MIN_OPSET} or later (asked for {opset}): use a "
                         f"later opset, or the torchscript exporter for opsets 11..{DYNAMO_MIN_OPSET - 1}")
    onnx = import_runtime("onnx", "ONNX export")
    output = Path(output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    # Exported on CPU in fp32 whatever the runtime precision: backends choose their own precision from it.
    model = cpu_fp32(model)
    wrapper = export_wrapper(model, config, variant, postprocess)
    names = (RAW_INPUTS, RAW_OUTPUTS) if variant == "raw" else (POSTPROCESSED_INPUTS, POSTPROCESSED_OUTPUTS)
    # A dynamic batch is traced with 2 images: an example batch of 1 could be specialised into the graph.
    example = example_input(config, variant, batch if batch is not None else 2)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            if exporter == "dynamo":
                _export_dynamo(wrapper, example, tmp, names, opset, batch is None)
            else:
                _export_torchscript(wrapper, example, tmp, names, opset, batch is None)
        proto = onnx.load(str(tmp))
        for key, value in _metadata(config, variant, postprocess, batch).items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp))
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``hybridnets_ros.*`` metadata of an exported file, without the prefix."""
    onnx = import_runtime("onnx", "ONNX export")
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key[len(METADATA_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)}
