"""HybridNetsPipeline end to end: golden variant C conformance, encodings, any frame size, backend factory."""
from __future__ import annotations

import copy
import logging

import cv2
import numpy as np
import pytest
import torch

from golden_support import MIN_MASK_AGREEMENT, assert_matches_golden, load_post, mask_agreement, run_threshold
from hybridnets_ros import resources
from hybridnets_ros.inference.backends import create_backend
from hybridnets_ros.inference.letterbox import Letterbox
from hybridnets_ros.inference.pipeline import HybridNetsPipeline
from hybridnets_ros.model.config import load_model_config
from hybridnets_ros.model.hybridnets import HybridNets, HybridNetsOutput

ROUND_TRIP_SIZES = [(1920, 1080), (640, 480), (1242, 375), (720, 1280), (333, 517), (101, 77)]  # (w, h)


@pytest.fixture(scope="module")
def pipeline(variant_c_weights):
    return HybridNetsPipeline.from_weights(variant_c_weights, device="cpu")


@pytest.fixture(scope="module")
def small_model():
    """An untrained compact d0 model: cheap forwards for geometry and API checks."""
    torch.manual_seed(0)
    config = load_model_config("hybridnets_d0_synth")
    return HybridNets(config).eval(), config


@pytest.fixture(scope="module")
def small_pipeline(small_model):
    model, config = small_model
    return HybridNetsPipeline(create_backend("torch", model, config, "cpu", "fp32"), config)


def _demo(demo_images_dir, index: int) -> np.ndarray:
    return cv2.imread(str(demo_images_dir / f"{index}.jpg"), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)


def test_preprocess_is_bit_exact(pipeline, golden_dir, demo_images_dir):
    """Exact on any CPU: JPEG decoding is integer arithmetic (libjpeg-turbo's SIMD paths equal its C path), the 2x
    area taps are dyadic (exact sums), and /255, -mean, /std are separate correctly rounded float32 operations."""
    golden = torch.load(golden_dir / "input_demo1.pt")
    x, boxes = pipeline.preprocess([_demo(demo_images_dir, 1)], "bgr8")
    assert boxes == [Letterbox.fit((720, 1280), (384, 640))]
    assert x.dtype == torch.float32 and torch.equal(x, golden["x"])


def test_encodings_give_the_same_input(small_pipeline):
    rgb = np.random.default_rng(0).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    alpha = np.full((90, 160, 1), 7, dtype=np.uint8)
    frames = [rgb, rgb[:, :, ::-1], np.concatenate([rgb, alpha], 2), np.concatenate([rgb[:, :, ::-1], alpha], 2)]
    x, _ = small_pipeline.preprocess(frames, ["rgb8", "bgr8", "rgba8", "bgra8"])
    for i in range(1, 4):
        assert torch.equal(x[i], x[0])
    grey = rgb[:, :, 1]
    x_mono, _ = small_pipeline.preprocess([grey, grey[:, :, None]], "mono8")
    x_rgb, _ = small_pipeline.preprocess([np.repeat(grey[:, :, None], 3, axis=2)], "rgb8")
    assert torch.equal(x_mono[0], x_rgb[0]) and torch.equal(x_mono[1], x_rgb[0])


@pytest.mark.parametrize(
    "frame,encoding,message",
    [
        (np.zeros((10, 10, 3), np.uint8), "yuv422", "unsupported encoding"),
        (np.zeros((10, 10, 4), np.uint8), "bgr8", "needs a"),
        (np.zeros((10, 10, 3), np.float32), "rgb8", "uint8"),
        (np.zeros((0, 10, 3), np.uint8), "rgb8", "empty"),
    ],
)
def test_bad_frames_are_rejected(small_pipeline, frame, encoding, message):
    with pytest.raises(ValueError, match=message):
        small_pipeline([frame], encoding)


def test_single_array_instead_of_a_list_is_rejected(small_pipeline):
    with pytest.raises(TypeError, match="sequence"):
        small_pipeline(np.zeros((10, 10, 3), np.uint8))
    assert small_pipeline([]) == []


@pytest.mark.slow
@pytest.mark.parametrize("index", [1, 2, 3])
def test_pipeline_matches_golden_variant_c(pipeline, golden_dir, demo_images_dir, index):
    post = load_post(golden_dir, index)
    pipeline.postprocess.score_threshold = run_threshold(post)
    pipeline.postprocess.nms_iou_threshold = float(post["iou_thresh"])
    result = pipeline([_demo(demo_images_dir, index)], "bgr8")[0]
    assert assert_matches_golden(result.detections, post, f"demo image {index}") > 10
    assert mask_agreement(result.seg_mask, post["few_seg_mask_orig"]) >= MIN_MASK_AGREEMENT
    assert set(pipeline.last_timings) == {"preprocess", "forward", "postprocess"}
    assert all(v > 0 for v in pipeline.last_timings.values())


def test_thresholds_can_change_between_calls(pipeline, golden_dir):
    raw = torch.load(golden_dir / "raw_seed0_variantC_demo1.pt")
    out = HybridNetsOutput(raw["regression"], raw["classification"], raw["segmentation"])
    post = load_post(golden_dir, 1)
    boxes = [Letterbox.fit((720, 1280), (384, 640))]
    pipeline.postprocess.score_threshold = run_threshold(post)
    pipeline.postprocess.nms_iou_threshold = float(post["iou_thresh"])
    full = pipeline.postprocess_batch(out, boxes)[0]
    assert_matches_golden(full.detections, post, "golden raw heads")
    assert mask_agreement(full.seg_mask, post["few_seg_mask_orig"]) >= MIN_MASK_AGREEMENT
    pipeline.postprocess.max_detections = 3
    try:
        capped = pipeline.postprocess_batch(out, boxes)[0]
    finally:
        pipeline.postprocess.max_detections = 100
    np.testing.assert_array_equal(capped.detections.boxes, full.detections.boxes[:3])


def test_any_frame_size_gives_original_size_outputs(small_pipeline):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in ROUND_TRIP_SIZES]
    small_pipeline.postprocess.score_threshold = 0.0
    try:
        results = small_pipeline(frames, "bgr8")
    finally:
        small_pipeline.postprocess.score_threshold = 0.25
    for (w, h), result in zip(ROUND_TRIP_SIZES, results):
        assert result.seg_mask.shape == (h, w) and result.seg_mask.dtype == np.uint8
        assert result.letterbox.orig_hw == (h, w)
        det = result.detections
        assert 0 < len(det) <= 100
        assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32 and det.class_ids.dtype == np.int64
        assert (det.boxes >= 0).all() and (det.boxes[:, [0, 2]] <= w).all() and (det.boxes[:, [1, 3]] <= h).all()
        assert (np.diff(det.scores) <= 0).all()


def test_channels_last_gives_the_same_outputs(small_model):
    model, config = small_model
    x = torch.randn(1, 3, *config.input_size)
    plain = create_backend("torch", model, config, "cpu", "fp32").forward(x)
    fast = create_backend("torch", copy.deepcopy(model), config, "cpu", "fp32", channels_last=True).forward(x)
    for a, b in zip(plain, fast):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_backend_factory_errors(small_model):
    model, config = small_model
    with pytest.raises(ValueError, match=r"valid backends are \['onnxruntime', 'openvino', 'tensorrt', 'torch'\]"):
        create_backend("tflite", model, config, "cpu", "fp32")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        create_backend("torch", model, config, "cpu", "fp16")
    with pytest.raises(ValueError, match="precision"):
        create_backend("torch", model, config, "cpu", "int8")
    with pytest.raises(ValueError, match="device"):
        create_backend("torch", model, config, "tpu", "fp32")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_without_cuda_is_a_clear_error(small_model):
    model, config = small_model
    with pytest.raises(ValueError, match="CUDA is not available"):
        create_backend("torch", model, config, "cuda:0", "fp32")


def test_missing_bundled_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(resources, "bundled_weights", lambda: tmp_path / "hybridnets_d0_synth.pt")
    with pytest.raises(FileNotFoundError, match="bundled model .* does not exist"):
        HybridNetsPipeline.from_weights(None, device="cpu")


def test_bundled_model_is_logged_as_synthetic(monkeypatch, tmp_path, small_model, caplog):
    from hybridnets_ros.model.checkpoint import save_checkpoint

    model, config = small_model
    path = save_checkpoint(tmp_path / "hybridnets_d0_synth.pt", model, config)
    monkeypatch.setattr(resources, "bundled_weights", lambda: path)
    with caplog.at_level(logging.INFO, logger="hybridnets_ros.inference.pipeline"):
        loaded = HybridNetsPipeline.from_weights(None, device="cpu")
    assert loaded.config == config and loaded.class_names == ["car"] and loaded.seg_names == ["road", "lane"]
    assert "synthetic" in caplog.text and str(path) in caplog.text
