"""The node executable in its own process, fed by another process over DDS: camera encodings other than the
pipeline's (yuv, nv21, Bayer, 16 bit) against the same frame as bgr8, and hostile input (decompression bombs,
undecodable and corrupt images, parameters at the edge of their range, stale-frame limits changed at run time,
transport loss seen in the stamps)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from encoding_support import encoded_image
from hybridnets_ros.ros import conversions
from hybridnets_ros.testing.checkpoints import random_checkpoint
from hybridnets_ros.testing.frames import synthetic_frame, unique_header
from hybridnets_ros.testing.probe import running_node

TIMEOUT = 120.0  # generous: the machine running the tests may be busy
RAW, JPEG, LOSSY = "camera", "jpeg_camera", "lossy_camera"
MIN_BOX_SCORE = 0.4  # boxes compared across encodings: well above the node's score_threshold (0.25) on both sides
MIN_IOU = 0.5
MIN_MASK_AGREEMENT = 0.99


@pytest.fixture(scope="module")
def d0_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("d0"))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of x1y1x2y2 boxes a (N, 4) and b (M, 4)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area = lambda boxes: np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _confident_boxes(detections) -> np.ndarray:
    boxes = conversions.detection_boxes(detections)
    scores = np.array([d.results[0].hypothesis.score for d in detections.detections])
    return boxes[scores >= MIN_BOX_SCORE] if len(boxes) else boxes


def _unmatched(boxes: np.ndarray, others: np.ndarray) -> int:
    """How many of ``boxes`` overlap none of ``others`` by MIN_IOU (others: every box the node published)."""
    if len(boxes) == 0:
        return 0
    if len(others) == 0:
        return len(boxes)
    return int((_iou(boxes, others).max(axis=1) < MIN_IOU).sum())


@pytest.mark.slow
def test_camera_encodings_give_the_outputs_of_the_same_frame_as_bgr8(ros_env, tmp_path) -> None:
    """Every encoding of conversions.ENCODINGS (both byte orders for 16 bit), published from this process, against
    the same synthetic road scene sent as bgr8 (mono encodings against mono8: they carry no colour)."""
    from hybridnets_ros.synth.scene import generate_scene

    bgr = generate_scene(11, (640, 384)).image_bgr
    cases = [(name, False) for name in conversions.ENCODINGS] + [
        (name, True) for name in conversions.ENCODINGS if name.endswith("16")]
    parameters = {"device": "cpu", "input_qos": "reliable", "max_batch_wait_ms": 0, "publish_overlay": False}
    outputs = {}
    with running_node(ros_env, tmp_path, parameters, {"image_outputs": ("segmentation",)}) as (node, probe):
        for name, big_endian in cases:
            msg = encoded_image(bgr, name, unique_header(), big_endian=big_endian)
            probe.publish(RAW, msg)  # one at a time: nothing is dropped
            detections = probe.wait_for_output(f"{RAW}/detections", msg.header, TIMEOUT)
            segmentation = probe.wait_for_output(f"{RAW}/segmentation", msg.header, TIMEOUT)
            assert detections is not None and segmentation is not None, f"{name}: no outputs\n{node.log()}"
            outputs[(name, big_endian)] = (detections, conversions.image_to_array(segmentation)[:, :, 0].copy())
    assert "Traceback" not in node.log() and "invalid" not in node.log()
    reference_boxes = _confident_boxes(outputs[("bgr8", False)][0])
    assert len(reference_boxes) > 0, "the bundled model found no car in the scene: nothing to compare"
    for (name, big_endian), (detections, mask) in outputs.items():
        reference = "mono8" if name.startswith("mono") else "bgr8"
        ref_detections, ref_mask = outputs[(reference, False)]
        agreement = (mask == ref_mask).mean()
        assert agreement >= MIN_MASK_AGREEMENT, f"{name} (big endian {big_endian}): masks agree on {agreement:.4f}"
        boxes, ref_boxes = conversions.detection_boxes(detections), conversions.detection_boxes(ref_detections)
        assert _unmatched(_confident_boxes(ref_detections), boxes) == 0, f"{name}: a {reference} box is missing"
        assert _unmatched(_confident_boxes(detections), ref_boxes) == 0, f"{name}: a box {reference} does not have"


def _compressed(data: bytes, fmt: str) -> CompressedImage:
    msg = CompressedImage(header=unique_header(frame_id="jpeg_optical"), format=fmt)
    msg.data = data
    return msg


def _encoded(image: np.ndarray, extension: str) -> bytes:
    ok, encoded = cv2.imencode(extension, image)
    assert ok
    return encoded.tobytes()


def _declaring(data: bytes, height: int, width: int) -> bytes:
    """A baseline jpeg or a png whose header declares height x width; the data is that of the small image."""
    import zlib

    out = bytearray(data)
    if data.startswith(b"\x89PNG"):
        out[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
        out[29:33] = zlib.crc32(bytes(out[12:29])).to_bytes(4, "big")
    else:
        sof = data.index(b"\xff\xc0")
        out[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(out)


def _decoder_crashers(extension: str, count: int) -> list[bytes]:
    """Small images in ``extension`` with 1-4 header bytes flipped on which ``cv2.imdecode`` raises (each of these
    used to end the node with a traceback)."""
    image = synthetic_frame(16, 24)
    data = _encoded(image.astype(np.float32) / 255 if extension == ".pfm" else image, extension)
    rng = np.random.default_rng(0)
    found: list[bytes] = []
    while len(found) < count:
        flipped = bytearray(data)
        for position in rng.integers(0, 64, rng.integers(1, 5)):
            flipped[position] = rng.integers(0, 256)
        try:
            cv2.imdecode(np.frombuffer(bytes(flipped), np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:
            found.append(bytes(flipped))
    return found


def _corrupt_scan_jpeg() -> bytes:
    """A jpeg whose scan was cut short and closed with an end marker: libjpeg only warns and fills the rest grey."""
    data = _encoded(synthetic_frame(72, 128, seed=4), ".jpg")
    scan = data.index(b"\xff\xda")
    return data[: (scan + len(data)) // 2] + b"\xff\xd9"


def _answered(probe, camera: str, msg) -> bool:
    return probe.wait_for_output(f"{camera}/detections", msg.header, TIMEOUT) is not None


@pytest.mark.slow
def test_hostile_input_is_warned_skipped_and_counted_and_limits_apply_at_once(ros_env, tmp_path, d0_weights) -> None:
    good = synthetic_frame(72, 128)
    tiny = _encoded(synthetic_frame(16, 24), ".jpg")
    bad_compressed = [
        (_compressed(_declaring(tiny, 65000, 65000), "jpeg"), "max_input_pixels"),
        (_compressed(_declaring(_encoded(synthetic_frame(16, 24), ".png"), 65000, 65000), "png"), None),
        (_compressed(_declaring(tiny, 20000, 20000), "jpeg"), None),  # 3.3 GB and 23 s to decode, before
        (_compressed(_corrupt_scan_jpeg(), "jpeg"), "Corrupt JPEG data"),
    ]
    bad_compressed += [(_compressed(data, ext[1:]), None) for ext in (".bmp", ".ras", ".pfm")
                       for data in _decoder_crashers(ext, 3)]
    parameters = {"weights": str(d0_weights), "device": "cpu", "input_qos": "reliable", "max_batch_wait_ms": 0,
                  "cameras": [RAW, JPEG, LOSSY], f"{JPEG}.transport": "compressed"}
    probe_options = {"cameras": (RAW, JPEG, LOSSY), "compressed": (JPEG,), "image_outputs": ()}
    with running_node(ros_env, tmp_path, parameters, probe_options) as (node, probe):
        for bad, warning in bad_compressed:
            probe.publish(JPEG, bad)
            if warning is not None:
                assert node.wait_for_log(warning, TIMEOUT), f"no warning '{warning}' in:\n{node.log()}"
            follow_up = _compressed(_encoded(good, ".png"), "png")
            probe.publish(JPEG, follow_up)  # answered: the node is alive and the bad frame was skipped
            assert _answered(probe, JPEG, follow_up), node.log()
            assert probe.find(f"{JPEG}/detections", bad.header) is None

        # a raw image above the limit, lowered at run time; the limit applies to the very next frame
        assert all(r.successful for r in probe.set_parameters({"max_input_pixels": 72 * 128 - 1}))
        too_large = conversions.array_to_image(good, unique_header(), "bgr8")
        probe.publish(RAW, too_large)
        assert node.wait_for_log("above max_input_pixels = 9215", TIMEOUT), node.log()
        assert all(r.successful for r in probe.set_parameters({"max_input_pixels": 72 * 128}))
        at_limit = conversions.array_to_image(good, unique_header(), "bgr8")
        probe.publish(RAW, at_limit)
        assert _answered(probe, RAW, at_limit)

        # a float just above its range: rclpy's range check lets it through (1e-6 tolerance); the node refuses it
        for name in ("score_threshold", "nms_iou_threshold"):
            results = probe.set_parameters({name: 1.0000005})
            assert results is not None and not results[0].successful and "[0.0, 1.0]" in results[0].reason
        after = conversions.array_to_image(good, unique_header(), "bgr8")
        probe.publish(RAW, after)
        assert _answered(probe, RAW, after), node.log()

        # max_input_age_ms: a change applies to the very next frame (the stamps here are decades old)
        assert all(r.successful for r in probe.set_parameters({"max_input_age_ms": 1}))
        stale = conversions.array_to_image(good, unique_header(), "bgr8")
        probe.publish(RAW, stale)
        assert node.wait_for_log("(max_input_age_ms 1)", TIMEOUT), node.log()
        assert all(r.successful for r in probe.set_parameters({"max_input_age_ms": 0}))
        fresh = conversions.array_to_image(good, unique_header(), "bgr8")
        probe.publish(RAW, fresh)
        assert _answered(probe, RAW, fresh), node.log()
        assert "(max_input_age_ms 0)" not in node.log()

        # transport loss: 10 Hz stamps with every third frame missing, as a lossy DDS link delivers them
        small = synthetic_frame(24, 32)
        sent = [k for k in range(45) if k % 3 != 2]
        for k in sent:
            header = unique_header(sec=2_000_000)
            header.stamp.sec, header.stamp.nanosec = 2_000_000 + k // 10, (k % 10) * 100_000_000
            probe.publish(LOSSY, conversions.array_to_image(small, header, "bgr8"))
            probe.wait_until(lambda h=header: probe.find(f"{LOSSY}/detections", h) is not None, 5.0)
        assert node.wait_for_log(f"camera '{LOSSY}': the input stamps imply that", TIMEOUT), node.log()
        assert "fastdds_shm.xml" in node.log()
        lossy = probe.wait_for_diagnostics(f"camera {LOSSY}", TIMEOUT,
                                           lambda v: int(v["received_stamped"]) == len(sent))
        assert lossy is not None and int(lossy["missed_by_stamps"]) == 45 - len(sent) - 1  # the last one never sent
        assert float(lossy["stamp_rate_hz"]) == pytest.approx(10.0, rel=1e-3)

        compressed_stats = probe.wait_for_diagnostics(
            f"camera {JPEG}", TIMEOUT, lambda v: int(v["invalid"]) == len(bad_compressed))
        assert compressed_stats is not None, f"diagnostics never counted {len(bad_compressed)} invalid frames"
        raw_stats = probe.diagnostics(f"camera {RAW}")
        assert int(raw_stats["invalid"]) == 1 and int(raw_stats["dropped_stale"]) == 1
        assert int(raw_stats["failed"]) == 0
        assert node.process.poll() is None  # still running
    log = node.log()
    assert "Traceback" not in log and "inference failed" not in log
    assert f"camera '{JPEG}': skipped an invalid image" in log
