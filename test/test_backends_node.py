"""The node with its default backend (auto, which picks OpenVINO where it is installed): its published boxes and
masks are the torch pipeline's, and /diagnostics says which backend runs and why."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export_support import assert_same_detections, mask_agreement, robust_postprocess, small_d0_model, torch_pipeline
from hybridnets_ros.inference.postprocess import Detections
from hybridnets_ros.inference.sample_frames import synthetic_frames
from hybridnets_ros.model.checkpoint import save_checkpoint
from hybridnets_ros.ros import conversions
from hybridnets_ros.testing.frames import unique_header
from hybridnets_ros.testing.probe import running_node

pytest.importorskip("openvino")
pytestmark = pytest.mark.slow

TIMEOUT = 300.0  # the node exports the ONNX model on its first start; the machine may be busy


def test_node_on_auto_runs_openvino_and_publishes_the_torch_results(ros_env, tmp_path: Path):
    model, config = small_d0_model()
    weights = save_checkpoint(tmp_path / "d0.pt", model, config)
    # Two sizes; synthetic scenes, whose scores this small model spreads evenly (on the demo images it gives
    # thousands of near-equal candidates, where the pre-NMS cut would decide by float noise).
    frames = synthetic_frames(1) + synthetic_frames(1, (480, 640), seed=5)
    postprocess = robust_postprocess(model, config, frames)
    expected = torch_pipeline(model, config, postprocess)(frames)

    env = {**ros_env, "HYBRIDNETS_ROS_CACHE": str(tmp_path / "cache")}
    parameters = {
        "weights": str(weights), "device": "cpu", "input_qos": "reliable",
        "max_batch_wait_ms": 0, "cameras": ["camera"], "score_threshold": postprocess.score_threshold,
        "nms_iou_threshold": postprocess.nms_iou_threshold, "max_detections": postprocess.max_detections,
    }
    with running_node(env, tmp_path, parameters, {"cameras": ("camera",)}, timeout=TIMEOUT) as (node, probe):
        model_status = probe.wait_for_diagnostics(": model", TIMEOUT)
        assert model_status is not None, node.log()
        assert model_status["backend"] == "openvino" and model_status["precision"] == "fp32"
        assert model_status["backend_selection"] == "auto on cpu fp32: openvino (fastest installed)"
        for frame, want in zip(frames, expected):
            msg = conversions.array_to_image(frame, unique_header(), "rgb8")
            probe.publish("camera", msg)
            detections = probe.wait_for_output("camera/detections", msg.header, TIMEOUT)
            segmentation = probe.wait_for_output("camera/segmentation", msg.header, TIMEOUT)
            assert detections is not None and segmentation is not None, node.log()
            scores = np.array([d.results[0].hypothesis.score for d in detections.detections], np.float32)
            got = Detections(conversions.detection_boxes(detections).astype(np.float32), scores,
                             np.zeros(len(scores), np.int64))
            assert len(want.detections) > 0
            assert_same_detections(want.detections, got, "node on openvino", strict_order=False)
            seg = conversions.image_to_array(segmentation)[:, :, 0]
            assert mask_agreement(want.seg_mask, seg) >= 0.999
    log = node.log()
    assert log.count("backend auto on cpu fp32: openvino (fastest installed)") == 1, "the choice is logged once"
    assert "Traceback" not in log
    assert list((tmp_path / "cache").glob("*.onnx")), "the node should have exported into the configured cache"
