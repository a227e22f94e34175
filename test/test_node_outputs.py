"""The node executable in its own process, driven over DDS: every output for real and generated frames, bad input,
label_info for a late subscriber and thresholds changed at run time. A small random d0 model keeps it quick."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from hybridnets_ros.ros import conversions
from hybridnets_ros.ros.conversions import DETECTION_CLASS_ID_OFFSET
from hybridnets_ros.testing.checkpoints import random_checkpoint
from hybridnets_ros.testing.frames import synthetic_frame, unique_header
from hybridnets_ros.testing.probe import running_node

TIMEOUT = 120.0  # generous: the machine running the tests may be busy
RAW, JPEG = "camera", "jpeg_camera"
IMAGE_OUTPUTS = ("segmentation", "drivable_area/mask", "lane_lines/mask", "overlay")


@pytest.fixture(scope="module")
def d0_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("d0"))


def _parameters(weights: Path, **extra: object) -> dict[str, object]:
    return {
        "weights": str(weights), "device": "cpu", "input_qos": "reliable", "max_batch_wait_ms": 0,
        "cameras": [RAW, JPEG], f"{JPEG}.transport": "compressed", **extra,
    }


def _probe_options(**extra: object) -> dict[str, object]:
    return {"cameras": (RAW, JPEG), "compressed": (JPEG,), **extra}


def _image(array: np.ndarray, encoding: str, padding: int = 0) -> Image:
    """An Image of ``array`` in ``encoding`` with ``padding`` extra bytes (value 255) at the end of every row."""
    msg = conversions.array_to_image(array, unique_header(), encoding)
    if padding:
        rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
        padded = np.concatenate([rows, np.full((msg.height, padding), 255, np.uint8)], axis=1)
        msg.step += padding
        msg.data = padded.tobytes()
    return msg


def _compressed(array: np.ndarray, extension: str) -> CompressedImage:
    ok, encoded = cv2.imencode(extension, array)
    assert ok
    msg = CompressedImage(header=unique_header(frame_id="jpeg_optical"), format=extension[1:])
    msg.data = encoded.tobytes()
    return msg


def _mono_image(msg: Image) -> np.ndarray:
    assert msg.encoding == "mono8"
    return conversions.image_to_array(msg)[:, :, 0]


def _check_outputs(probe, camera: str, msg, size: tuple[int, int], min_score: float) -> int:
    """All outputs of one input frame are there and consistent with it; returns its number of detections."""
    height, width = size
    detections = probe.wait_for_output(f"{camera}/detections", msg.header, TIMEOUT)
    assert detections is not None, f"no detections for {msg.header}"
    images = {name: probe.wait_for_output(f"{camera}/{name}", msg.header, TIMEOUT) for name in IMAGE_OUTPUTS}
    assert all(m is not None for m in images.values()), {k: m is None for k, m in images.items()}
    for output in (detections, *images.values()):
        assert output.header == msg.header  # stamp and frame_id unchanged
    for output in images.values():
        assert (output.height, output.width) == (height, width)
    seg = _mono_image(images["segmentation"])
    assert set(np.unique(seg).tolist()) <= {0, 1, 2}
    drivable, lane = _mono_image(images["drivable_area/mask"]), _mono_image(images["lane_lines/mask"])
    assert set(np.unique(drivable).tolist()) <= {0, 255} and set(np.unique(lane).tolist()) <= {0, 255}
    np.testing.assert_array_equal(drivable == 255, seg == 1)
    np.testing.assert_array_equal(lane == 255, seg == 2)
    assert images["overlay"].encoding == "bgr8"
    boxes = conversions.detection_boxes(detections)
    assert (boxes[:, :2] >= -1e-3).all() and (boxes[:, 2] <= width + 1e-3).all() and (boxes[:, 3] <= height + 1e-3).all()
    assert (boxes[:, 2:] >= boxes[:, :2] - 1e-6).all()
    for detection in detections.detections:
        assert detection.header == msg.header
        hypothesis = detection.results[0].hypothesis
        assert hypothesis.class_id == "car" and min_score < hypothesis.score <= 1.0
    return len(detections.detections)


@pytest.mark.slow
def test_demo_images_and_generated_frames(ros_env, tmp_path, d0_weights, demo_images_dir) -> None:
    frames: list[tuple[str, object, tuple[int, int]]] = []
    for path in sorted(demo_images_dir.glob("*.jpg")):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        frames.append((RAW, _image(bgr, "bgr8"), bgr.shape[:2]))
    colour = synthetic_frame(300, 500, seed=1)
    frames += [
        (RAW, _image(colour[:, :, ::-1], "rgb8"), (300, 500)),
        (RAW, _image(synthetic_frame(480, 640, seed=2)[:, :, 0], "mono8"), (480, 640)),
        (RAW, _image(np.dstack([synthetic_frame(201, 333, seed=3), np.full((201, 333), 255, np.uint8)]), "rgba8"),
         (201, 333)),
        (RAW, _image(np.dstack([synthetic_frame(90, 160, seed=4), np.zeros((90, 160), np.uint8)]), "bgra8"),
         (90, 160)),
        (RAW, _image(synthetic_frame(640, 360, seed=5), "bgr8"), (640, 360)),  # portrait
        (RAW, _image(synthetic_frame(100, 150, seed=6), "bgr8", padding=13), (100, 150)),  # padded rows
        (RAW, _image(synthetic_frame(120, 170, seed=7)[:, :, ::-1], "rgb8", padding=2), (120, 170)),
        (JPEG, _compressed(synthetic_frame(360, 640, seed=8), ".jpg"), (360, 640)),
        (JPEG, _compressed(synthetic_frame(240, 320, seed=9), ".png"), (240, 320)),
    ]
    # score_threshold 0 lets the random model's low scores through, so the box checks have boxes to check
    with running_node(ros_env, tmp_path, _parameters(d0_weights, score_threshold=0.0),
                      _probe_options(overlay=True)) as (node, probe):
        counts = []
        for camera, msg, size in frames:
            probe.publish(camera, msg)  # one at a time: nothing is dropped, every frame is answered
            counts.append(_check_outputs(probe, camera, msg, size, min_score=0.0))
    assert max(counts) > 0
    assert "Traceback" not in node.log()


def _bad_raw(encoding: str = "bgr8", height: int = 4, width: int = 4, step: int = 12, size: int = 48) -> Image:
    msg = Image(header=unique_header(), height=height, width=width, encoding=encoding, step=step)
    msg.data = bytes(size)
    return msg


def _bad_compressed(payload: bytes) -> CompressedImage:
    msg = CompressedImage(header=unique_header(), format="jpeg")
    msg.data = payload
    return msg


BAD_INPUTS = [
    (RAW, lambda: _bad_raw(encoding="8UC3"), "unsupported encoding '8UC3'"),
    (RAW, lambda: _bad_raw(encoding="32FC1", step=16, size=64), None),  # same kind as above: may be rate-limited
    (RAW, lambda: _bad_raw(height=0, size=0), "zero-sized image"),
    (RAW, lambda: _bad_raw(size=47), "data length 47 != height * step"),
    (RAW, lambda: _bad_raw(size=49), None),
    (RAW, lambda: _bad_raw(step=5, size=20), "step 5 is shorter than a row"),
    (JPEG, lambda: _bad_compressed(b"\xff\xd8\xff\xe0 truncated"), "does not decode as jpeg or png"),
    (JPEG, lambda: _bad_compressed(b""), "empty compressed image"),
]


@pytest.mark.slow
def test_bad_input_is_warned_skipped_counted_and_the_next_frame_answered(ros_env, tmp_path, d0_weights) -> None:
    good = synthetic_frame(72, 128)
    with running_node(ros_env, tmp_path, _parameters(d0_weights), _probe_options()) as (node, probe):
        for camera, make_bad, warning in BAD_INPUTS:
            bad = make_bad()
            probe.publish(camera, bad)
            if warning is not None:
                assert node.wait_for_log(warning, TIMEOUT), f"no warning '{warning}' in:\n{node.log()}"
                line = next(line for line in node.log().splitlines() if warning in line)
                assert f"camera '{camera}'" in line and "WARN" in line
            follow_up = _image(good, "bgr8") if camera == RAW else _compressed(good, ".png")
            probe.publish(camera, follow_up)
            assert probe.wait_for_output(f"{camera}/detections", follow_up.header, TIMEOUT) is not None
            assert probe.find(f"{camera}/detections", bad.header) is None
        bad_counts = {c: sum(1 for cam, _, _ in BAD_INPUTS if cam == c) for c in (RAW, JPEG)}
        for camera, expected in bad_counts.items():
            values = probe.wait_for_diagnostics(f"camera {camera}", TIMEOUT,
                                                lambda v, n=expected: int(v["invalid"]) == n)
            assert values is not None, f"diagnostics never counted {expected} invalid frames for {camera}"
            assert int(values["published"]) == expected  # each good follow-up frame
        assert node.process.poll() is None  # still running
    assert "Traceback" not in node.log()


@pytest.mark.slow
def test_label_info_for_a_late_subscriber_and_thresholds_at_run_time(ros_env, tmp_path, d0_weights) -> None:
    frame = synthetic_frame(144, 256)
    with running_node(ros_env, tmp_path, _parameters(d0_weights), _probe_options(label_info=False)) as (node, probe):
        first = _image(frame, "bgr8")
        probe.publish(RAW, first)  # the node has been active (label_info sent) for at least this frame
        assert probe.wait_for_output(f"{RAW}/detections", first.header, TIMEOUT) is not None
        probe.subscribe_label_info()
        assert probe.wait_until(lambda: probe.messages("label_info"), TIMEOUT), "late subscriber got no label_info"
        label_info = probe.messages("label_info")[-1]
        mapping = {c.class_id: c.class_name for c in label_info.class_map}
        assert mapping == {0: "background", 1: "road", 2: "lane", DETECTION_CLASS_ID_OFFSET: "car"}
        assert label_info.threshold == pytest.approx(0.25)

        results = probe.set_parameters({"score_threshold": 0.0, "max_detections": 3})
        assert results is not None and all(r.successful for r in results)
        assert probe.wait_until(lambda: probe.messages("label_info")[-1].threshold == 0.0, TIMEOUT)
        low = _image(frame, "bgr8")
        probe.publish(RAW, low)
        assert len(probe.wait_for_output(f"{RAW}/detections", low.header, TIMEOUT).detections) == 3

        results = probe.set_parameters({"score_threshold": 0.99})
        assert results is not None and results[0].successful
        high = _image(frame, "bgr8")
        probe.publish(RAW, high)
        assert len(probe.wait_for_output(f"{RAW}/detections", high.header, TIMEOUT).detections) == 0

        rejected = probe.set_parameters({"score_threshold": 1.5})
        assert rejected is not None and not rejected[0].successful and rejected[0].reason
        rejected = probe.set_parameters({"max_detections": 0})
        assert rejected is not None and not rejected[0].successful
