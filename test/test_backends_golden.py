"""Golden variant C (d3) on the ONNX Runtime and OpenVINO backends: raw heads within the golden tolerances, and the
final boxes and masks of demo images 1-3 (``few_`` setting) equal to the torch pipeline's through the pipeline."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export_support import ATOL, golden_c_model, torch_pipeline
from golden_support import (
    DEMO_IMAGES,
    MIN_MASK_AGREEMENT,
    assert_matches_golden,
    assert_same_boxes,
    compare_cut,
    load_post,
    mask_agreement,
    run_threshold,
)
from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.inference.backends import create_backend
from hybridnets_ros.inference.backends.onnx_cache import cached_raw_onnx
from hybridnets_ros.inference.pipeline import HybridNetsPipeline
from hybridnets_ros.inference.sample_frames import read_rgb

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def golden_c(golden_dir: Path):
    return golden_c_model(golden_dir)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory, golden_c) -> Path:
    """A cache holding the raw d3 export (once for the module), as a backend's first start leaves it."""
    cache = tmp_path_factory.mktemp("onnx_cache")
    cached_raw_onnx(*golden_c, cache_dir=cache)
    return cache


@pytest.fixture(scope="module", params=["onnxruntime", "openvino"])
def backend(request, golden_c, cache_dir: Path):
    model, config = golden_c
    return create_backend(request.param, model, config, "cpu", "fp32", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def demo_cases(golden_c, golden_dir: Path,
               demo_images_dir: Path) -> list[tuple[np.ndarray, DetectionThresholds, float, object]]:
    """Per demo image: the RGB frame, its ``few_`` run thresholds and compare cut (golden_support) and the torch
    pipeline's result at those thresholds."""
    model, config = golden_c
    pipeline = torch_pipeline(model, config)
    cases = []
    for index in DEMO_IMAGES:
        frame = read_rgb(demo_images_dir / f"{index}.jpg")
        golden = load_post(golden_dir, index)
        with torch.inference_mode():
            x, letterboxes = pipeline.preprocess([frame])
            heads = pipeline.forward(x)
        postprocess = DetectionThresholds(score_threshold=run_threshold(golden),
                                        nms_iou_threshold=float(golden["iou_thresh"]))
        expected = pipeline.postprocess_batch(heads, letterboxes, postprocess)[0]
        # the torch side itself is the golden result (the pipeline's own tests check this more closely)
        assert_matches_golden(expected.detections, golden, f"torch, demo image {index}")
        cases.append((frame, postprocess, compare_cut(golden), expected))
    return cases


def test_raw_heads_within_golden_tolerances(backend, golden_dir: Path):
    x = torch.load(golden_dir / "input_demo1.pt", weights_only=True)["x"]
    golden = torch.load(golden_dir / "raw_seed0_variantC_demo1.pt", weights_only=True)
    out = backend.forward(x)
    for name, atol in ATOL.items():
        got = getattr(out, name)
        assert got.dtype == torch.float32 and got.shape == golden[name].shape, name
        diff = float((got - golden[name]).abs().max())
        assert diff <= atol, f"{backend.name} {name}: max |diff| {diff:.2e} > {atol:.0e}"
    agreement = float((out.segmentation.argmax(1) == golden["segmentation"].argmax(1)).float().mean())
    assert agreement >= MIN_MASK_AGREEMENT


def test_demo_images_match_the_torch_pipeline(backend, golden_c, demo_cases):
    model, config = golden_c
    pipeline = HybridNetsPipeline(backend, config)
    for index, (frame, postprocess, cut, expected) in zip(DEMO_IMAGES, demo_cases):
        pipeline.postprocess = postprocess
        got = pipeline([frame])[0]
        what = f"{backend.name} demo image {index}"
        assert assert_same_boxes(expected.detections, got.detections, cut, what) > 10
        assert mask_agreement(expected.seg_mask, got.seg_mask) >= MIN_MASK_AGREEMENT, what
