"""An exported ONNX file checked against the torch pipeline: ONNX Runtime (CPU) and torch on the same frames.

The agreement demanded is the golden tolerances for a backend: boxes with the same classes and IoU >= 0.99, masks
equal on >= 99.9 % of the pixels.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.inference.backends import create_backend
from hybridnets_ros.inference.backends.optional_import import import_runtime
from hybridnets_ros.inference.box_pairing import box_agreement, matched_min_iou
from hybridnets_ros.inference.export.exporter import (
    POSTPROCESSED_INPUTS,
    POSTPROCESSED_OUTPUTS,
    RAW_INPUTS,
    RAW_OUTPUTS,
    cpu_fp32,
    read_metadata,
)
from hybridnets_ros.inference.letterbox import letterbox_images
from hybridnets_ros.inference.pipeline import HybridNetsPipeline
from hybridnets_ros.inference.postprocess import FrameResult
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.hybridnets import HybridNetsOutput

MIN_BOX_IOU = 0.99
MIN_MASK_AGREEMENT = 0.999


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
    postprocessed: max differences of the in-graph outputs against the same predictor run eagerly in torch on the
    torch heads, then the ONNX boxes and class map (un-letterboxed) against the pipeline's final results.
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
        selected = pipeline.predictor.detect(heads.regression, heads.classification, postprocess)
        torch_detections, torch_counts = selected.rows(), selected.counts
        torch_seg = pipeline.predictor.segment(heads.segmentation)
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
