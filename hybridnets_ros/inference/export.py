"""``hybridnets-export``: ONNX export of a checkpoint, checked against the torch pipeline; TensorRT engine builds.

Two variants (see :mod:`hybridnets_ros.inference.onnx_graph` for the exact input/output conventions):

* ``postprocessed`` (default): letterboxed uint8 images in; final detections (network-input pixels), their count and
  the uint8 segmentation class map out. Anchors, decoding, clipping, NMS and the argmax live in the graph.
* ``raw``: normalised float images in; the three heads out, as the torch model returns them. The ONNX Runtime,
  OpenVINO and TensorRT backends run this one, so the pipeline's pre- and post-processing stay shared.

The input is static (the model config's input size); the batch is dynamic unless ``--batch N`` fixes it.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

import hybridnets_ros
from hybridnets_ros import resources
from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.inference.backends import create_backend
from hybridnets_ros.inference.backends.optional_import import import_runtime
from hybridnets_ros.inference.box_pairing import box_agreement
from hybridnets_ros.inference.calibration import DEFAULT_FRAMES as DEFAULT_CALIBRATION_FRAMES
from hybridnets_ros.inference.calibration import SYNTHETIC
from hybridnets_ros.inference.letterbox import letterbox_images
from hybridnets_ros.inference.onnx_graph import (
    POSTPROCESSED_INPUTS,
    POSTPROCESSED_OUTPUTS,
    RAW_INPUTS,
    RAW_OUTPUTS,
    PostprocessedHybridNets,
    RawHeads,
    dynamo_translation_table,
)
from hybridnets_ros.inference.pipeline import HybridNetsPipeline
from hybridnets_ros.inference.postprocess import FrameResult, seg_class_map
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.hybridnets import HybridNetsOutput

LOG = logging.getLogger(__name__)

VARIANTS = ("postprocessed", "raw")
EXPORTERS = ("dynamo", "torchscript")
# The dynamo exporter implements opset 18 (it cannot down-convert this model's Pad to 17); ONNX Runtime, OpenVINO
# and TensorRT 10 read it (the tensorrt backend falls back to the TorchScript exporter, opset 17, for TensorRT 8).
DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18
DEFAULT_EXPORTER = "dynamo"
METADATA_PREFIX = "hybridnets_ros."
# Largest batch the dynamo exporter's symbolic batch dimension admits; backends pick their own limits below it.
_MAX_DYNAMIC_BATCH = 1024
_NOISY_LOGGERS = ("torch.onnx._internal.exporter._registration", "onnx_ir")
# Agreement the check demands (the golden tolerances for a backend): boxes in the same order with IoU >= 0.99 and
# the same classes, masks equal on >= 99.9 % of the pixels.
MIN_BOX_IOU = 0.99
MIN_MASK_AGREEMENT = 0.999


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
        return PostprocessedHybridNets(model, config, postprocess or DetectionThresholds()).eval()
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
        meta["input"] = (f"images: (B,3,{h},{w}) float32 RGB, letterboxed (pad 114), x/255 then (x-mean)/std with "
                         f"mean {list(config.mean)} std {list(config.std)}")
        meta["outputs"] = ("regression (B,N,4) dy,dx,dh,dw; classification (B,N,C) probabilities; "
                           "segmentation (B,S,H,W) logits")
    else:
        meta["input"] = f"images: (B,3,{h},{w}) uint8 RGB, letterboxed to {h}x{w} with pad value 114"
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


# ----------------------------------------------------------------------------------------------------------------
# Checking an exported file against the torch pipeline


@dataclass
class FrameAgreement:
    """How one frame's ONNX result compares with the torch pipeline's (original image pixels)."""

    torch_boxes: int
    onnx_boxes: int
    # boxes paired by rank (the golden criterion); 1.0 when both are empty, 0.0 on a count mismatch
    min_iou_by_rank: float
    min_iou_matched: float  # boxes paired greedily by IoU within a class: insensitive to reordered near-equal scores
    mask_agreement: float

    @property
    def ok(self) -> bool:
        return (self.torch_boxes == self.onnx_boxes and self.min_iou_matched >= MIN_BOX_IOU
                and self.mask_agreement >= MIN_MASK_AGREEMENT)


@dataclass
class VerificationReport:
    """Max |difference| per ONNX output (vs the same computation in torch) and per-frame agreement."""

    max_abs_diff: dict[str, float] = field(default_factory=dict)
    frames: list[FrameAgreement] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.frames)

    def lines(self) -> list[str]:
        out = [f"  max |torch - onnx| {name}: {value:.3g}" for name, value in self.max_abs_diff.items()]
        for i, f in enumerate(self.frames):
            out.append(f"  frame {i}: boxes torch {f.torch_boxes} / onnx {f.onnx_boxes}, min IoU in rank order "
                       f"{f.min_iou_by_rank:.4f}, matched {f.min_iou_matched:.4f}, mask agreement "
                       f"{100 * f.mask_agreement:.3f}% -> {'ok' if f.ok else 'MISMATCH'}")
        return out


def matched_min_iou(ious: np.ndarray) -> float:
    """Smallest IoU when each reference box (rows, by rank) takes its best still unmatched partner (columns)."""
    ious = ious.copy()
    worst = 1.0
    for row in range(ious.shape[0]):
        best = int(ious[row].argmax())
        worst = min(worst, float(ious[row, best]))
        ious[:, best] = -1.0
    return worst


def compare_frame(reference: FrameResult, boxes: np.ndarray, class_ids: np.ndarray, mask: np.ndarray) -> FrameAgreement:
    """Agreement of (boxes (N,4) original px by descending score, class_ids (N,), mask (h0,w0)) with ``reference``."""
    ref = reference.detections
    by_rank = matched = 0.0
    if len(ref.boxes) == len(boxes) == 0:
        by_rank = matched = 1.0
    elif len(ref.boxes) == len(boxes):
        ious = box_agreement(ref.boxes, boxes)
        ious[ref.class_ids[:, None] != np.asarray(class_ids, dtype=np.int64)[None]] = 0.0
        by_rank = float(ious.diagonal().min())
        matched = matched_min_iou(ious)
    agreement = float((reference.seg_mask == mask).mean())
    return FrameAgreement(len(ref.boxes), len(boxes), by_rank, matched, agreement)


def _onnx_session(path: Path):  # noqa: ANN202 (onnxruntime is optional)
    ort = import_runtime("onnxruntime", "ONNX check")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _batched(frames: Sequence[np.ndarray], batch: int | None) -> list[np.ndarray]:
    """The frames, repeated cyclically up to a static batch size when the file has one."""
    if batch is None or batch == len(frames):
        return list(frames)
    return [frames[i % len(frames)] for i in range(batch)]


def verify_onnx(
    path: str | os.PathLike,
    model: nn.Module,
    config: ModelConfig,
    frames: Sequence[np.ndarray],
    postprocess: DetectionThresholds | None = None,
    batch: int | None = None,
) -> VerificationReport:
    """Run the exported file in ONNX Runtime (CPU) and the torch pipeline on the same RGB frames and compare.

    raw: max differences of the three heads, then both through the pipeline's post-processing.
    postprocessed: max differences of the in-graph outputs against the same wrapper evaluated in torch on the torch
    heads, then the ONNX boxes (un-letterboxed) and class map (un-letterboxed) against the pipeline's final results.
    ``postprocess`` must be the thresholds the postprocessed file was exported with.
    """
    path = Path(path)
    postprocess = postprocess or DetectionThresholds()
    frames = _batched(frames, batch)
    variant = read_metadata(path).get("variant", "raw")
    model = cpu_fp32(model)
    pipeline = HybridNetsPipeline(create_backend("torch", model, config, "cpu", "fp32"), config, postprocess)
    session = _onnx_session(path)
    report = VerificationReport()
    with torch.inference_mode():
        x, letterboxes = pipeline.preprocess(frames, "rgb8")
        heads = pipeline.forward(x)
        expected = pipeline.postprocess_batch(heads, letterboxes)
        if variant == "raw":
            arrays = session.run(list(RAW_OUTPUTS), {RAW_INPUTS[0]: x.numpy()})
            got = HybridNetsOutput(*(torch.from_numpy(a) for a in arrays))
            for name, a, b in zip(RAW_OUTPUTS, heads, got):
                report.max_abs_diff[name] = float((a - b).abs().max())
            for ref, res in zip(expected, pipeline.postprocess_batch(got, letterboxes)):
                report.frames.append(compare_frame(ref, res.detections.boxes, res.detections.class_ids, res.seg_mask))
            return report
        rgb = [torch.from_numpy(f).permute(2, 0, 1) for f in frames]
        images, _ = letterbox_images(rgb, config.input_size)
        detections, counts, seg = (torch.from_numpy(a) for a in session.run(
            list(POSTPROCESSED_OUTPUTS), {POSTPROCESSED_INPUTS[0]: images.numpy()}))
        wrapper = PostprocessedHybridNets(model, config, postprocess)
        torch_detections, torch_counts = wrapper.detect(heads.regression, heads.classification)
        torch_seg = seg_class_map(heads.segmentation, config.seg_mode)
        report.max_abs_diff["num_detections"] = float((torch_counts - counts).abs().max())
        if torch.equal(torch_counts, counts):
            report.max_abs_diff["detections"] = float((torch_detections - detections).abs().max())
        report.max_abs_diff["seg_classes (pixels differing)"] = float((torch_seg != seg).sum())
        for i, (ref, lb) in enumerate(zip(expected, letterboxes)):
            rows = detections[i, : int(counts[i])]
            boxes = lb.boxes_to_orig(rows[:, :4]).numpy()
            mask = lb.mask_to_orig(seg[i]).numpy()
            report.frames.append(compare_frame(ref, boxes, rows[:, 5].to(torch.int64).numpy(), mask))
    return report


# ----------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridnets-export",
        description="Export a HybridNets checkpoint to ONNX (with or without post-processing in the graph) and check "
                    "it against the torch pipeline, or build the TensorRT engine the tensorrt backend uses.",
    )
    parser.add_argument("--weights", help="checkpoint (default: the bundled model)")
    parser.add_argument("--model-config",
                        help="model config name in models/ or a yaml path (default: from the checkpoint)")
    parser.add_argument("--output", help="ONNX file to write (required unless --tensorrt-engine)")
    parser.add_argument("--variant", choices=VARIANTS, default="postprocessed",
                        help="postprocessed: uint8 images in, final detections + seg class map out (default); "
                             "raw: normalised images in, the three heads out")
    parser.add_argument("--opset", type=int, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--exporter", choices=EXPORTERS,
                        help="torch.onnx exporter: dynamo (torch.export based, the default) or torchscript (legacy)")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, help="fixed batch size")
    batch.add_argument("--dynamic-batch", action="store_true", help="dynamic batch dimension (default)")
    parser.add_argument("--score-threshold", type=float, default=DetectionThresholds.score_threshold)
    parser.add_argument("--nms-iou-threshold", type=float, default=DetectionThresholds.nms_iou_threshold)
    parser.add_argument("--pre-nms-top-k", type=int, default=DetectionThresholds.pre_nms_top_k)
    parser.add_argument("--max-detections", type=int, default=DetectionThresholds.max_detections,
                        help="K, the fixed number of detection rows per image (postprocessed variant)")
    parser.add_argument("--verify-images", nargs="+", metavar="IMAGE",
                        help="images to check the export on (default: 2 synthetic 1280x720 frames)")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch check")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                        help="fp32: the ONNX export (default); int8: quantise for OpenVINO (NNCF) into the cache the "
                             "openvino backend reads, also written to --output (.xml + .bin) when given; with "
                             "--tensorrt-engine: the engine's precision (fp32, fp16 (default) or int8)")
    parser.add_argument("--calibration", default=SYNTHETIC,
                        help="int8: calibration frames: synthetic (default), a folder of images, a video or a rosbag2 "
                             "bag")
    parser.add_argument("--calibration-frames", type=int, default=DEFAULT_CALIBRATION_FRAMES,
                        help=f"int8: frames taken evenly from the calibration source (default "
                             f"{DEFAULT_CALIBRATION_FRAMES})")
    trt = parser.add_argument_group("TensorRT (build only)")
    trt.add_argument("--tensorrt-engine", action="store_true",
                     help="build (or find) the TensorRT engine the tensorrt backend would use, in the cache, and exit")
    trt.add_argument("--max-batch", type=int, default=1, help="largest batch the TensorRT engine accepts")
    trt.add_argument("--device", default="cuda", help="CUDA device for the TensorRT engine")
    parser.add_argument("--cache-dir", help="cache for ONNX files and engines (default ~/.cache/hybridnets_ros)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def _load(args: argparse.Namespace) -> tuple[nn.Module, ModelConfig, Path]:
    from hybridnets_ros.model.checkpoint import build_model
    from hybridnets_ros.model.config import load_model_config

    weights = Path(args.weights).expanduser() if args.weights else resources.bundled_weights()
    if not weights.is_file():
        raise FileNotFoundError(f"weights '{weights}' not found" + ("" if args.weights else
                                " (the bundled model is not installed): pass --weights"))
    config = load_model_config(args.model_config) if args.model_config else None
    model, config = build_model(weights, config, device="cpu")
    return model, config, weights


def _verification_frames(paths: Sequence[str] | None) -> list[np.ndarray]:
    from hybridnets_ros.inference.sample_frames import read_rgb, synthetic_frames

    return [read_rgb(p) for p in paths] if paths else synthetic_frames(2)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Only this package's messages at the chosen level: the exporter's libraries are chatty at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hybridnets_ros").setLevel(args.log_level)
    openvino_int8 = args.precision == "int8" and not args.tensorrt_engine
    if not args.tensorrt_engine and not openvino_int8 and not args.output:
        build_parser().error("--output is required (or use --tensorrt-engine, or --precision int8)")
    if args.precision == "fp16" and not args.tensorrt_engine:
        build_parser().error("--precision fp16 is for --tensorrt-engine; the ONNX export is fp32")
    try:
        model, config, weights = _load(args)
        if args.tensorrt_engine:
            from hybridnets_ros.inference.backends import tensorrt_backend

            engine = tensorrt_backend.build_engine_for_model(
                model, config, device=args.device, precision=args.precision or "fp16", max_batch=args.max_batch,
                cache_dir=args.cache_dir, opset=args.opset, exporter=args.exporter, calibration=args.calibration,
                calibration_frames=args.calibration_frames)
            print(f"TensorRT engine: {engine}")
            return 0
        if openvino_int8:
            from hybridnets_ros.inference.backends import openvino_backend

            quantized = openvino_backend.build_int8_for_model(model, config, args.calibration,
                                                              args.calibration_frames, args.cache_dir)
            print(f"OpenVINO INT8 model (the openvino backend's cache): {quantized}")
            if args.output:
                print(f"wrote {openvino_backend.copy_ir(quantized, Path(args.output).expanduser())}")
            return 0
        postprocess = DetectionThresholds(args.score_threshold, args.nms_iou_threshold, args.pre_nms_top_k,
                                        args.max_detections)
        postprocess.validate()
        frames = None if args.no_verify else _verification_frames(args.verify_images)
        opset, exporter = args.opset or DEFAULT_OPSET, args.exporter or DEFAULT_EXPORTER
        print(f"exporting {weights} ('{config.name}', input {config.input_size[0]}x{config.input_size[1]}) as "
              f"{args.variant} ONNX (opset {opset}, {exporter} exporter, batch {args.batch or 'dynamic'}) ...",
              flush=True)
        path = export_onnx(model, config, args.output, variant=args.variant, opset=opset, batch=args.batch,
                           postprocess=postprocess, exporter=exporter)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        print(f"hybridnets-export: error: {exc}", file=sys.stderr)
        return 1
    if frames is None:
        return 0
    report = verify_onnx(path, model, config, frames, postprocess, args.batch)
    print(f"check against the torch pipeline on {len(frames)} frame(s) (ONNX Runtime CPU):")
    print("\n".join(report.lines()))
    print("check: OK" if report.ok else "check: MISMATCH (see above)")
    return 0 if report.ok else 2


if __name__ == "__main__":
    sys.exit(main())
