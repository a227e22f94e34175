"""``hybridnets-export``: ONNX export of a checkpoint, checked against the torch pipeline; TensorRT engine and
OpenVINO int8 builds into the backends' caches.

The variants and the file conventions are described in :mod:`hybridnets_ros.inference.export.exporter`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from hybridnets_ros.cli_support import EXIT_FAILURE, EXIT_OK, configure_logging, run_command
from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.inference.backends import openvino_backend, tensorrt_backend
from hybridnets_ros.inference.calibration import DEFAULT_FRAMES as DEFAULT_CALIBRATION_FRAMES
from hybridnets_ros.inference.calibration import SYNTHETIC
from hybridnets_ros.inference.export.exporter import DEFAULT_EXPORTER, DEFAULT_OPSET, EXPORTERS, VARIANTS, export_onnx
from hybridnets_ros.inference.export.verify import verify_onnx
from hybridnets_ros.inference.sample_frames import read_rgb, synthetic_frames
from hybridnets_ros.model.checkpoint import CheckpointError, build_model
from hybridnets_ros.model.config import ModelConfig, load_model_config
from hybridnets_ros.resources import resolve_weights


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
    weights = resolve_weights(args.weights, "--weights")
    config = load_model_config(args.model_config) if args.model_config else None
    model, config = build_model(weights, config, device="cpu")
    return model, config, weights


def _verification_frames(paths: Sequence[str] | None) -> list[np.ndarray]:
    return [read_rgb(p) for p in paths] if paths else synthetic_frames(2)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hybridnets-export``; exit codes as :mod:`hybridnets_ros.cli_support` says (an export that the
    check finds disagreeing with torch is a failure: 1)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.tensorrt_engine and args.precision != "int8" and not args.output:
        parser.error("--output is required (or use --tensorrt-engine, or --precision int8)")
    if args.precision == "fp16" and not args.tensorrt_engine:
        parser.error("--precision fp16 is for --tensorrt-engine; the ONNX export is fp32")
    # Only this package's messages at the chosen level: the exporter's libraries are chatty at INFO.
    configure_logging(logging.WARNING, package_level=args.log_level)
    return run_command("hybridnets-export", lambda: _run(args), bad_input=(CheckpointError,))


def _run(args: argparse.Namespace) -> int:
    model, config, weights = _load(args)
    if args.tensorrt_engine:
        engine = tensorrt_backend.build_engine_for_model(
            model, config, device=args.device, precision=args.precision or "fp16", max_batch=args.max_batch,
            cache_dir=args.cache_dir, opset=args.opset, exporter=args.exporter, calibration=args.calibration,
            calibration_frames=args.calibration_frames)
        print(f"TensorRT engine: {engine}")
        return EXIT_OK
    if args.precision == "int8":
        quantized = openvino_backend.build_int8_for_model(model, config, args.calibration, args.calibration_frames,
                                                          args.cache_dir)
        print(f"OpenVINO INT8 model (the openvino backend's cache): {quantized}")
        if args.output:
            print(f"wrote {openvino_backend.copy_ir(quantized, Path(args.output).expanduser())}")
        return EXIT_OK
    postprocess = DetectionThresholds(args.score_threshold, args.nms_iou_threshold, args.pre_nms_top_k,
                                      args.max_detections)
    postprocess.validate()
    frames = None if args.no_verify else _verification_frames(args.verify_images)
    opset, exporter = args.opset or DEFAULT_OPSET, args.exporter or DEFAULT_EXPORTER
    print(f"exporting {weights} ('{config.name}', input {config.input_size[0]}x{config.input_size[1]}) as "
          f"{args.variant} ONNX (opset {opset}, {exporter} exporter, batch {args.batch or 'dynamic'}) ...", flush=True)
    path = export_onnx(model, config, args.output, variant=args.variant, opset=opset, batch=args.batch,
                       postprocess=postprocess, exporter=exporter)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if frames is None:
        return EXIT_OK
    report = verify_onnx(path, model, config, frames, postprocess, args.batch)
    print(f"check against the torch pipeline on {len(frames)} frame(s) (ONNX Runtime CPU):")
    print("\n".join(report.lines()))
    print("check: OK" if report.ok else "check: MISMATCH (see above)")
    return EXIT_OK if report.ok else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
