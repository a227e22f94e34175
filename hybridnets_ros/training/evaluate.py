"""Validation of a HybridNets model with the reference protocol, and the ``hybridnets-eval`` command.

Detection: post-processing at score > 0.001 and NMS IoU 0.6 (the reference's validation settings), with the
candidates capped to the ``pre_nms_top_k`` best per image before NMS so that memory stays bounded; predictions and
labels are both mapped back to original image pixels before matching. Segmentation: class maps on the letterboxed
network-size tensors, padding included, as the reference computes them, with per-image averages (the reference) and
dataset-wide IoUs beside them; optionally also dataset-wide IoUs at each image's original resolution. See
``metrics.py`` for the exact definitions and the empty-case conventions.

``evaluate_model`` returns a flat ``{name: float}`` dict (TensorBoard-ready):

* ``det/precision``, ``det/recall`` (reference protocol: every prediction above the evaluation threshold, IoU 0.5),
  ``det/precision_op``, ``det/recall_op`` (score > ``operating_threshold``), ``det/map50``, ``det/map50_95``,
  ``det/ap50/<class>``, ``det/ap50_95/<class>`` (classes with ground truth only), ``det/num_gt``, ``det/num_pred``;
* ``seg/<name>/iou``, ``seg/<name>/miou`` (mean over images of (IoU_background + IoU_name)/2, the reference "mIoU"),
  ``seg/<name>/acc`` (balanced accuracy), ``seg/<name>/iou_dataset`` for ``background`` and every ``seg_list`` name,
  and ``seg/<name>/iou_dataset_orig`` when ``original_resolution`` is on;
* ``fitness`` = 0.1 mAP@0.5 + 0.9 mAP@0.5:0.95 (the reference's best-checkpoint criterion) and ``num_images``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.inference.backends import add_backend_arguments, create_backend
from hybridnets_ros.inference.backends.base import resolve_device
from hybridnets_ros.inference.predictor import HybridNetsPredictor, channel_statistics, normalize_images, seg_class_map
from hybridnets_ros.cli_support import configure_logging, run_command
from hybridnets_ros.model.checkpoint import CheckpointError, build_model
from hybridnets_ros.model.config import ModelConfig, load_model_config
from hybridnets_ros.model.hybridnets import HybridNetsOutput
from hybridnets_ros.training.augment import pack_masks
from hybridnets_ros.training.dataset import Batch, BddDataset, Entry, LabelError, collate, seg_target
from hybridnets_ros.training.metrics import (
    DetectionAccumulator,
    SegmentationAccumulator,
    confusion_stats_binary,
    confusion_stats_multiclass,
)
from hybridnets_ros.training.project import ProjectConfig, ProjectConfigError

logger = logging.getLogger(__name__)

BACKGROUND = "background"
FITNESS_WEIGHTS = (0.1, 0.9)  # mAP@0.5, mAP@0.5:0.95


def seg_class_names(config: ModelConfig) -> list[str]:
    """Names of the evaluated segmentation classes, background first (binary: background and the one class)."""
    return [BACKGROUND, *config.seg_list]


def reference_thresholds() -> DetectionThresholds:
    """The reference's validation post-processing: score > 0.001, NMS IoU 0.6, at most 1000 candidates and boxes."""
    return DetectionThresholds(score_threshold=0.001, nms_iou_threshold=0.6, pre_nms_top_k=1000, max_detections=1000)


def normalise_images(images: torch.Tensor, config: ModelConfig, device: torch.device) -> torch.Tensor:
    """(B,3,H,W) uint8 RGB -> (B,3,H,W) float32 on ``device``, normalised as the predictor does (training steps,
    which hold no predictor)."""
    return normalize_images(images.to(device, non_blocking=True), *channel_statistics(config, device))


def seg_prediction(segmentation: torch.Tensor, seg_mode: str) -> torch.Tensor:
    """Logits (B,S,H,W) -> what is compared with the target.

    multiclass/binary: (B,H,W) uint8 class IDs; multilabel: (B,S,H,W) bool, channel k on where sigmoid >= 0.5.
    """
    if seg_mode == "multilabel":
        return torch.sigmoid(segmentation.to(torch.float32)) >= 0.5
    return seg_class_map(segmentation, seg_mode)


def seg_truth(target: torch.Tensor, seg_mode: str) -> torch.Tensor:
    """A dataset seg target in ``seg_prediction``'s layout.

    Targets: multiclass ((B,)H,W) IDs; binary ((B,)1,H,W) 0/1; multilabel ((B,)S+1,H,W) 0/1.
    """
    if seg_mode == "binary":
        return target[..., 0, :, :]
    if seg_mode == "multilabel":
        return target.bool()
    return target


def seg_stats(prediction: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B,K,4) tp/fp/fn/tn of class maps (B,H,W) or per-channel masks (B,K,H,W) from the two functions above."""
    if prediction.dim() == 4:
        return confusion_stats_binary(prediction, truth)
    return confusion_stats_multiclass(prediction, truth, num_classes)


def _dataset_entries(loader: Iterable[Batch]) -> dict[str, Entry] | None:
    """Image path -> dataset entry when the loader reads a BddDataset (possibly through a Subset)."""
    dataset = getattr(loader, "dataset", None)
    while dataset is not None and not isinstance(dataset, BddDataset):
        dataset = getattr(dataset, "dataset", None)
    if dataset is None:
        return None
    return {str(entry.image): entry for entry in dataset.entries}


def _original_truth(entry: Entry, config: ModelConfig) -> torch.Tensor:
    """The seg target of an image at its original size, from its mask files (same rules as the dataset)."""
    masks = []
    for path in entry.masks:
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise FileNotFoundError(f"{path}: cannot decode the mask")
        masks.append(mask)
    packed = torch.from_numpy(pack_masks(np.stack(masks)))
    return seg_truth(seg_target(packed, len(config.seg_list), config.seg_mode), config.seg_mode)


def _flatten(det: dict[str, Any], seg: dict[str, dict[str, float]], seg_orig: dict[str, dict[str, float]] | None,
             num_images: int) -> dict[str, float]:
    out: dict[str, float] = {
        f"det/{key}": float(det[key])
        for key in ("precision", "recall", "precision_op", "recall_op", "map50", "map50_95", "num_gt", "num_pred")
    }
    for name, m in det["per_class"].items():
        if m.ap50 is not None:
            out[f"det/ap50/{name}"] = m.ap50
            out[f"det/ap50_95/{name}"] = m.ap50_95
    for name, values in seg.items():
        for key, value in values.items():
            out[f"seg/{name}/{key}"] = value
        if seg_orig is not None:
            out[f"seg/{name}/iou_dataset_orig"] = seg_orig[name]["iou_dataset"]
    out["fitness"] = FITNESS_WEIGHTS[0] * det["map50"] + FITNESS_WEIGHTS[1] * det["map50_95"]
    out["num_images"] = float(num_images)
    return out


def _length(loader: Iterable[Any]) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    config: ModelConfig,
    loader: Iterable[Batch],
    device: torch.device | str = "cpu",
    thresholds: DetectionThresholds | None = None,
    operating_threshold: float = 0.25,
    original_resolution: bool = False,
    amp: bool = False,
    max_batches: int | None = None,
    progress: bool = False,
    forward: Callable[[torch.Tensor], HybridNetsOutput] | None = None,
) -> dict[str, float]:
    """Reference-protocol metrics of ``model`` over ``loader`` (batches of ``dataset.collate``, without augmentation).

    ``model`` may be wrapped in DDP/DataParallel: the bare module runs, so calling this on one rank never waits on a
    collective. Its train/eval mode is restored afterwards. ``thresholds`` post-process the detections (default:
    :func:`reference_thresholds`). ``original_resolution`` adds dataset-wide seg IoUs at
    each image's own size (it re-reads the mask files, and needs the loader's dataset to be a BddDataset).
    ``forward`` runs the network instead of ``model`` (an inference backend's ``forward``, returning its outputs on
    ``device``), so a backend and precision are measured with the same protocol.
    Returns the flat dict described in the module docstring.
    """
    device = torch.device(device)
    net = getattr(model, "module", model)
    was_training = net.training
    net.eval()
    predictor = HybridNetsPredictor(config, thresholds if thresholds is not None else reference_thresholds())
    predictor.to(device)
    names = seg_class_names(config)
    det_acc = DetectionAccumulator()
    seg_acc = SegmentationAccumulator(len(names))
    entries = _dataset_entries(loader) if original_resolution else None
    if original_resolution and entries is None:
        logger.warning("original-resolution seg IoU needs a BddDataset loader; skipping it")
    seg_orig_acc = SegmentationAccumulator(len(names)) if entries is not None else None
    batches: Iterable[Batch] = loader
    if progress:
        batches = tqdm(loader, desc="eval", unit="batch", total=max_batches or _length(loader))
    num_images = 0
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                out = (forward or net)(predictor.normalize(batch.images.to(device, non_blocking=True)))
            selected = predictor.detect(out.regression, out.classification)
            for b, (lb, ann) in enumerate(zip(batch.letterboxes, batch.annotations)):
                boxes, scores, classes = selected.image(b)
                gt = ann[ann[:, 4] >= 0]  # rows of -1 pad the batch
                det_acc.update(lb.boxes_to_orig(boxes).cpu(), scores.cpu(), classes.cpu(),
                               lb.boxes_to_orig(gt[:, :4]), gt[:, 4].long())
            prediction = seg_prediction(out.segmentation, predictor.seg_mode)
            truth = seg_truth(batch.seg.to(device), config.seg_mode)
            seg_acc.update(seg_stats(prediction, truth, len(names)))
            if seg_orig_acc is not None:
                for j, (lb, path) in enumerate(zip(batch.letterboxes, batch.paths)):
                    orig_pred = lb.mask_to_orig(prediction[j]).cpu()[None]
                    orig_truth = _original_truth(entries[path], config)[None]
                    seg_orig_acc.update(seg_stats(orig_pred, orig_truth, len(names)))
            num_images += batch.images.shape[0]
    finally:
        net.train(was_training)
    det = det_acc.compute(list(config.obj_list), operating_threshold)
    seg_orig = seg_orig_acc.compute(names) if seg_orig_acc is not None else None
    return _flatten(det, seg_acc.compute(names), seg_orig, num_images)


def format_table(metrics: dict[str, float]) -> str:
    """Two aligned columns, metric and value; counts as integers, the rest with four decimals."""
    width = max(len("metric"), *(len(k) for k in metrics))
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    for key, value in metrics.items():
        shown = f"{int(value)}" if key.split("/")[-1].startswith("num_") else f"{value:.4f}"
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------ CLI
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
