"""Helpers for the export and backend tests: golden variant C, a small d0 with lively outputs, box comparison."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from golden_support import MIN_IOU, mask_agreement  # noqa: F401 (mask_agreement: the backend tests import it here)
from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.inference.backends import create_backend
from hybridnets_ros.inference.box_pairing import box_agreement, matched_min_iou
from hybridnets_ros.inference.pipeline import HybridNetsPipeline
from hybridnets_ros.inference.postprocess import Detections
from hybridnets_ros.inference.sample_frames import synthetic_frames
from hybridnets_ros.model import HybridNets, ModelConfig, load_model_config

STATE_DICT_A = "hybridnets_d3_seed0_state_dict.pt"
OVERRIDES_C = "hybridnets_d3_seed0_variantC_overrides.pt"
# Golden tolerances (../shared/golden/README.md, "Suggested checks for variant C").
ATOL = {"regression": 2e-3, "classification": 5e-4, "segmentation": 2e-2}


def golden_c_model(golden_dir: Path) -> tuple[HybridNets, ModelConfig]:
    """The d3 network with the variant C weights (A state dict + overrides), eval mode."""
    config = load_model_config("hybridnets_d3_bdd100k")
    model = HybridNets(config).eval()
    load = lambda name: torch.load(golden_dir / name, map_location="cpu", weights_only=True)  # noqa: E731
    model.load_state_dict({**load(STATE_DICT_A), **load(OVERRIDES_C)}, strict=True)
    return model, config


def small_d0_model(input_hw: tuple[int, int] = (128, 256)) -> tuple[HybridNets, ModelConfig]:
    """A d0 at a small input whose outputs depend on the image, like golden variant C.

    Fresh weights give near-constant scores (ties everywhere); as for variant C, BN affine parameters are drawn at
    random and the BN statistics are set in one train-mode pass over road-like frames.
    """
    config = dataclasses.replace(load_model_config("hybridnets_d0_synth"), name="d0_test", input_size=input_hw)
    torch.manual_seed(0)
    model = HybridNets(config)
    generator = torch.Generator().manual_seed(2)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0.0, 0.1, generator=generator)
            module.momentum = None
            module.reset_running_stats()
    pipeline = HybridNetsPipeline(create_backend("torch", model, config, "cpu", "fp32"), config)
    x, _ = pipeline.preprocess(synthetic_frames(6, seed=1))
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval(), config


def torch_pipeline(model: HybridNets, config: ModelConfig, postprocess: DetectionThresholds | None = None):
    return HybridNetsPipeline(create_backend("torch", model, config, "cpu", "fp32"), config, postprocess)


def robust_postprocess(model: HybridNets, config: ModelConfig, frames: list[np.ndarray]) -> DetectionThresholds:
    """Post-processing under which backends can be compared with torch on ``frames`` (H,W,3) rgb8: the torch scores'
    :func:`robust_threshold`, NMS IoU 0.3 and max_detections 1000, above the candidate count (the cap would cut a run
    of near-equal scores at an arbitrary place)."""
    pipeline = torch_pipeline(model, config)
    with torch.inference_mode():
        scores = pipeline.forward(pipeline.preprocess(frames)[0]).classification.amax(dim=2)
    return DetectionThresholds(score_threshold=robust_threshold(scores), nms_iou_threshold=0.3, max_detections=1000)


def robust_threshold(scores: torch.Tensor, min_count: int = 3, max_count: int = 500, margin: float = 1e-4) -> float:
    """The highest score threshold that keeps >= ``min_count`` candidates in every image and has no score within
    ``margin`` of it (the backends differ from torch by ~1e-5 here), so backends agree on the candidate sets.
    At most ``max_count`` candidates per image, below the default pre_nms_top_k (1000), whose cut could otherwise
    fall between near-equal scores.

    scores: (B,N) best-class score per anchor.
    """
    merged = scores.flatten().sort(descending=True).values
    for upper, lower in zip(merged[:-1].tolist(), merged[1:].tolist()):
        threshold = (upper + lower) / 2
        counts = (scores > threshold).sum(dim=1)
        if upper - lower > 2 * margin and int(counts.min()) >= min_count:
            assert int(counts.max()) <= max_count, f"{counts.tolist()} candidates: too many for a robust comparison"
            return threshold
    raise AssertionError("no threshold with a clear gap: the test model's scores are too crowded")


def assert_same_detections(expected: Detections, got: Detections, what: str, strict_order: bool = True) -> None:
    """Same count and classes, each box with IoU >= 0.99 (zero-area boxes: the same corners), paired by rank (the
    golden criterion), or with ``strict_order=False`` paired greedily by IoU, for scores so close that float noise
    may swap their ranks."""
    assert len(got) == len(expected), f"{what}: {len(got)} boxes, torch has {len(expected)}"
    if not len(expected):
        return
    ious = box_agreement(expected.boxes, got.boxes)
    if strict_order:
        np.testing.assert_array_equal(got.class_ids, expected.class_ids, err_msg=what)
        worst = float(ious.diagonal().min())
    else:
        ious[expected.class_ids[:, None] != got.class_ids[None]] = 0.0
        worst = matched_min_iou(ious)
    assert worst >= MIN_IOU, f"{what}: min IoU {'by rank' if strict_order else 'matched'} {worst:.4f}"
