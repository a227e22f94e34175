"""Validation of a HybridNets model with the reference protocol (the ``hybridnets-eval`` command is
:mod:`hybridnets_ros.training.evaluate`).

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

import logging
from collections.abc import Callable, Iterable
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.inference.predictor import HybridNetsPredictor, channel_statistics, normalize_images, seg_class_map
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.hybridnets import HybridNetsOutput
from hybridnets_ros.training.augment import pack_masks
from hybridnets_ros.training.dataset import Batch, BddDataset, Entry, seg_target
from hybridnets_ros.training.metrics import (
    DetectionAccumulator,
    SegmentationAccumulator,
    confusion_stats_binary,
    confusion_stats_multiclass,
)

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
