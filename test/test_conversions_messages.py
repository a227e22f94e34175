"""Message conversions of the node, without a ROS graph: images both ways, compressed images, detections, labels."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from hybridnets_ros.ros import conversions
from hybridnets_ros.ros.conversions import ImageConversionError


def _header() -> Header:
    header = Header(frame_id="cam_optical")
    header.stamp.sec, header.stamp.nanosec = 1234, 5678
    return header


def _array(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _raw_image(encoding: str, height: int, width: int, step: int, data: bytes) -> Image:
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.data = data
    return msg


@pytest.mark.parametrize("encoding", sorted(conversions.CHANNELS))
def test_image_round_trip_every_encoding(encoding: str) -> None:
    channels = conversions.CHANNELS[encoding]
    array = _array(7, 11, channels)
    msg = conversions.array_to_image(array, _header(), encoding)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (7, 11, 11 * channels, encoding)
    assert msg.header == _header()
    back = conversions.image_to_array(msg)
    assert back.shape == (7, 11, channels)
    np.testing.assert_array_equal(back.reshape(array.shape), array)


def test_image_to_array_is_a_view_of_the_message_buffer() -> None:
    msg = conversions.array_to_image(_array(4, 5, 3), _header(), "bgr8")
    view = conversions.image_to_array(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))


def test_padded_step_is_honoured() -> None:
    array = _array(6, 5, 3)
    step = 5 * 3 + 9  # 9 bytes of padding per row, filled with a value that must never show up
    rows = np.full((6, step), 77, np.uint8)
    rows[:, :15] = array.reshape(6, 15)
    msg = _raw_image("rgb8", 6, 5, step, rows.tobytes())
    np.testing.assert_array_equal(conversions.image_to_array(msg), array)


def test_array_to_image_fills_data_from_bytes_of_a_strided_array() -> None:
    array = _array(8, 10, 3)[:, ::2]  # not contiguous
    msg = conversions.array_to_image(array, _header(), "bgr8")
    assert len(msg.data) == msg.height * msg.step == 8 * 5 * 3
    np.testing.assert_array_equal(conversions.image_to_array(msg), array)


@pytest.mark.parametrize(
    ("encoding", "height", "width", "step", "size", "kind", "words"),
    [
        ("yuv422", 4, 4, 8, 32, "encoding", "unsupported encoding 'yuv422'"),
        ("16UC1", 4, 4, 8, 32, "encoding", "unsupported encoding '16UC1'"),
        ("bgr8", 0, 4, 12, 0, "size", "zero-sized"),
        ("bgr8", 4, 0, 0, 0, "size", "zero-sized"),
        ("bgr8", 4, 4, 12, 47, "length", "data length 47 != height * step = 4 * 12 = 48"),
        ("bgr8", 4, 4, 12, 49, "length", "data length 49"),
        ("mono8", 4, 4, 3, 12, "step", "step 3 is shorter"),
    ],
)
def test_invalid_images_raise_with_the_reason(
    encoding: str, height: int, width: int, step: int, size: int, kind: str, words: str
) -> None:
    msg = _raw_image(encoding, height, width, step, bytes(size))
    with pytest.raises(ImageConversionError) as info:
        conversions.image_to_array(msg)
    assert info.value.kind == kind
    assert words in str(info.value)


@pytest.mark.parametrize("extension", [".jpg", ".png"])
def test_compressed_images_decode_to_bgr(extension: str) -> None:
    array = np.zeros((24, 40, 3), np.uint8)
    array[:, :20] = (255, 0, 0)  # blue in bgr
    ok, encoded = cv2.imencode(extension, array)
    assert ok
    msg = CompressedImage(format=extension[1:])
    msg.data = encoded.tobytes()
    decoded = conversions.compressed_to_array(msg)
    assert decoded.shape == (24, 40, 3)
    # jpeg is lossy at the colour edge: compare away from it (channel order is what this checks)
    tolerance = 0 if extension == ".png" else 8
    for column in (4, 35):
        assert np.abs(decoded[:, column].astype(int) - array[:, column]).max() <= tolerance


def test_compressed_grey_png_becomes_three_channels() -> None:
    ok, encoded = cv2.imencode(".png", np.full((5, 6), 200, np.uint8))
    msg = CompressedImage(format="png")
    msg.data = encoded.tobytes()
    decoded = conversions.compressed_to_array(msg)
    assert decoded.shape == (5, 6, 3) and (decoded == 200).all()


@pytest.mark.parametrize(
    ("payload", "kind"),
    [(b"", "empty"), (b"\xff\xd8\xff\xe0 definitely not a jpeg", "decode"), (bytes(range(256)) * 4, "decode")],
)
def test_undecodable_compressed_images_raise(payload: bytes, kind: str) -> None:
    msg = CompressedImage(format="jpeg")
    msg.data = payload
    with pytest.raises(ImageConversionError) as info:
        conversions.compressed_to_array(msg)
    assert info.value.kind == kind
    assert "jpeg" in str(info.value)


def test_array_to_image_rejects_mismatches() -> None:
    with pytest.raises(ValueError):
        conversions.array_to_image(np.zeros((2, 2, 3), np.float32), _header(), "bgr8")
    with pytest.raises(ValueError):
        conversions.array_to_image(np.zeros((2, 2, 3), np.uint8), _header(), "mono8")


def test_class_mask_is_0_or_255() -> None:
    seg = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    np.testing.assert_array_equal(conversions.class_mask(seg, 1), [[0, 255, 0], [0, 255, 0]])
    np.testing.assert_array_equal(conversions.class_mask(seg, 2), [[0, 0, 255], [255, 0, 0]])
    assert conversions.class_mask(seg, 1).dtype == np.uint8


def test_detections_message_carries_boxes_in_pixels_names_scores_and_header() -> None:
    boxes = np.array([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 1280.0, 720.0]], np.float32)
    scores = np.array([0.9, 0.3], np.float32)
    class_ids = np.array([1, 0], np.int64)
    msg = conversions.detections_to_msg(_header(), boxes, scores, class_ids, ["car", "person"])
    assert msg.header == _header()
    assert len(msg.detections) == 2
    first = msg.detections[0]
    assert first.header == _header()
    assert first.id == ""
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (30.0, 40.0)
    assert (first.bbox.size_x, first.bbox.size_y) == (40.0, 40.0)
    assert [d.results[0].hypothesis.class_id for d in msg.detections] == ["person", "car"]
    assert msg.detections[0].results[0].hypothesis.score == pytest.approx(0.9)
    np.testing.assert_allclose(conversions.detection_boxes(msg), boxes)


def test_empty_detections() -> None:
    msg = conversions.detections_to_msg(_header(), np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                        np.zeros(0, np.int64), ["car"])
    assert msg.detections == [] and msg.header == _header()
    assert conversions.detection_boxes(msg).shape == (0, 4)


def test_label_info_maps_mask_values_and_detection_classes() -> None:
    msg = conversions.label_info_msg(_header(), ["car"], ["road", "lane"], 0.25)
    mapping = {c.class_id: c.class_name for c in msg.class_map}
    assert mapping == {0: "background", 1: "road", 2: "lane", conversions.DETECTION_CLASS_ID_OFFSET: "car"}
    assert msg.threshold == pytest.approx(0.25)
