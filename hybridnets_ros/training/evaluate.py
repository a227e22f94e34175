"""``hybridnets-eval``: evaluate a checkpoint on a BDD100K-layout split with the reference protocol of
:mod:`hybridnets_ros.training.evaluation`, through any inference backend and precision; prints the metrics and writes
them, with the settings, as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hybridnets_ros.cli_support import configure_logging, run_command
from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.inference.backends import add_backend_arguments, create_backend
from hybridnets_ros.inference.backends.base import resolve_device
from hybridnets_ros.model.checkpoint import CheckpointError, build_model
from hybridnets_ros.model.config import load_model_config
from hybridnets_ros.training.dataset import BddDataset, LabelError, collate
from hybridnets_ros.training.evaluation import evaluate_model
from hybridnets_ros.training.project import ProjectConfig, ProjectConfigError


def format_table(metrics: dict[str, float]) -> str:
    """Two aligned columns, metric and value; counts as integers, the rest with four decimals."""
    width = max(len("metric"), *(len(k) for k in metrics))
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    for key, value in metrics.items():
        shown = f"{int(value)}" if key.split("/")[-1].startswith("num_") else f"{value:.4f}"
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridnets-eval",
        description="Evaluate a HybridNets checkpoint on a BDD100K-layout split with the reference protocol "
        "(recall, mAP@0.5, mAP@0.5:0.95; drivable mIoU, lane IoU and accuracy per image; dataset-wide IoUs).",
    )
    parser.add_argument("--weights", required=True, help="checkpoint (.pt): ours, or a bare upstream state dict")
    parser.add_argument("--project", required=True, help="project/dataset yaml (dataroot, labelroot, segroot, ...)")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--model-config", default=None,
                        help="model config name or yaml; default: the one embedded in the checkpoint")
    add_backend_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="data loader worker processes (default: 2)")
    parser.add_argument("--score-threshold", type=float, default=0.001, help="detection score threshold (0.001)")
    parser.add_argument("--nms-iou-threshold", type=float, default=0.6, help="NMS IoU threshold (0.6)")
    parser.add_argument("--pre-nms-top-k", type=int, default=1000, help="candidates per image kept before NMS (1000)")
    parser.add_argument("--operating-threshold", type=float, default=0.25,
                        help="score threshold of the *_op precision and recall (0.25, the demo's)")
    parser.add_argument("--no-original-resolution", action="store_true",
                        help="skip the dataset-wide seg IoU at original image size (saves re-reading the masks)")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--skip-bad-labels", action="store_true", help="leave out (and count) images with bad labels")
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    parser.add_argument("--output", default="metrics.json", help="JSON file to write (default: metrics.json)")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as the parsed CLI arguments say; returns the JSON document (also written to ``args.output``)."""
    project = ProjectConfig.from_yaml(args.project)  # cheap checks first: a typo fails before the model is built
    device = resolve_device(args.device)
    config = load_model_config(args.model_config) if args.model_config else None
    model, config = build_model(args.weights, config, "cpu")
    backend = create_backend(args.backend, model, config, device, args.precision,
                             **({"calibration": args.calibration} if args.precision == "int8" else {}))
    # The ONNX-based backends return CPU tensors whatever the device: evaluate there.
    device = backend.device
    dataset: torch.utils.data.Dataset = BddDataset(project, args.split, config, skip_bad_labels=args.skip_bad_labels)
    if args.max_images is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(args.max_images, len(dataset))))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.workers, collate_fn=collate,
        pin_memory=device.type == "cuda",
    )
    thresholds = DetectionThresholds(args.score_threshold, args.nms_iou_threshold, args.pre_nms_top_k,
                                     args.pre_nms_top_k)
    metrics = evaluate_model(
        model, config, loader, device, thresholds,
        operating_threshold=args.operating_threshold,
        original_resolution=not args.no_original_resolution,
        amp=args.amp,
        progress=sys.stderr.isatty(),
        forward=backend.forward,
    )
    document = {
        "weights": str(args.weights),
        "model_config": config.name,
        "project": str(args.project),
        "split": args.split,
        "settings": {
            "score_threshold": args.score_threshold,
            "nms_iou_threshold": args.nms_iou_threshold,
            "pre_nms_top_k": args.pre_nms_top_k,
            "operating_threshold": args.operating_threshold,
            "device": str(device),
            "backend": backend.name,
            "precision": backend.precision,
            "backend_selection": backend.selection,
            **({"calibration": args.calibration} if backend.precision == "int8" else {}),
        },
        "metrics": metrics,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return document


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hybridnets-eval``; exit codes as :mod:`hybridnets_ros.cli_support` says."""
    args = build_parser().parse_args(argv)
    configure_logging()
    return run_command("hybridnets-eval", lambda: _evaluate_and_print(args),
                       bad_input=(CheckpointError, ProjectConfigError, LabelError))


def _evaluate_and_print(args: argparse.Namespace) -> None:
    document = run(args)
    print(format_table(document["metrics"]))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
