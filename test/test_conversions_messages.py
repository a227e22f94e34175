"""Message conversions of the node, without a ROS graph: images both ways, compressed images, detections, labels."""
from __future__ import annotations

import zlib

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


@pytest.mark.parametrize("encoding", conversions.PIPELINE_ENCODINGS)
def test_image_round_trip_every_pipeline_encoding(encoding: str) -> None:
    channels = conversions.ENCODINGS[encoding].channels
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
        ("8UC3", 4, 4, 12, 48, "encoding", "unsupported encoding '8UC3'"),
        ("16UC1", 4, 4, 8, 32, "encoding", "'16UC1' is a depth image"),
        ("32FC1", 4, 4, 16, 64, "encoding", "'32FC1' is a depth image"),
        ("yuv422", 4, 3, 6, 24, "size", "width divisible by 2"),
        ("nv21", 3, 4, 4, 16, "size", "height divisible by 2"),
        ("nv21", 4, 4, 4, 16, "length", "data length 16 != height * step = 6 * 4 = 24"),
        ("mono16", 4, 4, 7, 28, "step", "step 7 is shorter than a row of 4 mono16 pixels (8 bytes)"),
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


def test_the_pipeline_takes_exactly_the_eight_bit_encodings_it_is_handed() -> None:
    from hybridnets_ros.inference import pipeline
    from hybridnets_ros.inference.pipeline import PIPELINE_ENCODINGS as PIPELINE_INPUTS

    assert set(conversions.PIPELINE_ENCODINGS) == set(PIPELINE_INPUTS)
    for name in conversions.PIPELINE_ENCODINGS:
        assert conversions.ENCODINGS[name].channels == pipeline.ENCODINGS[name].channels
    assert {e.decoded for e in conversions.ENCODINGS.values()} <= set(PIPELINE_INPUTS)


def _reference(bgr: np.ndarray, encoding: str) -> np.ndarray:
    """``bgr`` in the pipeline encoding a message in ``encoding`` decodes to (colour channels only)."""
    decoded = conversions.decoded_encoding(encoding)
    if decoded.startswith("mono"):
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[:, :, None]
    return bgr[:, :, ::-1] if decoded.startswith("rgb") else bgr


LOSSLESS = [e for e in conversions.ENCODINGS if e in conversions.PIPELINE_ENCODINGS or e.endswith("16")
            and not e.startswith("bayer")]


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("encoding", sorted(conversions.ENCODINGS))
def test_every_camera_encoding_converts_to_the_frame_it_was_made_from(encoding: str, big_endian: bool) -> None:
    from encoding_support import encoded_image
    from hybridnets_ros.synth.scene import generate_scene

    bgr = generate_scene(3, (320, 192)).image_bgr
    msg = encoded_image(bgr, encoding, _header(), big_endian=big_endian, padding=3)
    image = conversions.image_to_array(msg)
    reference = _reference(bgr, encoding)
    assert image.dtype == np.uint8 and image.shape[:2] == (192, 320)
    colour = image[:, :, : reference.shape[2]].astype(int)
    if encoding in LOSSLESS:  # 8 bits as they are; 16 bits: the high byte of (v * 257) is v
        np.testing.assert_array_equal(colour, reference)
    else:  # chroma subsampling and demosaicing smooth colour edges; a swapped channel or pattern costs ~30 levels
        assert np.abs(colour - reference).mean() < 2.0


def test_sixteen_bit_byte_order_comes_from_is_bigendian() -> None:
    msg = _raw_image("mono16", 1, 2, 4, bytes([0x12, 0x34, 0xAB, 0xCD]))
    assert conversions.image_to_array(msg).ravel().tolist() == [0x34, 0xCD]  # little-endian: high byte second
    msg.is_bigendian = 1
    assert conversions.image_to_array(msg).ravel().tolist() == [0x12, 0xAB]


def _compressed(data: bytes, fmt: str = "jpeg") -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = data
    return msg


def _declaring(data: bytes, height: int, width: int) -> bytes:
    """``data`` (a jpeg or png) with the size in its header replaced: the pixels stay those of the small image."""
    out = bytearray(data)
    if data.startswith(b"\x89PNG"):
        out[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR: length, type, width, height, ...
        out[29:33] = zlib.crc32(bytes(out[12:29])).to_bytes(4, "big")  # ... and its CRC over type + data
    else:
        sof = data.index(b"\xff\xc0")  # baseline frame header: length(2) precision(1) height(2) width(2)
        out[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(out)


@pytest.mark.parametrize("extension", [".jpg", ".png"])
def test_declared_size_is_read_from_the_header_and_checked_before_decoding(extension: str) -> None:
    ok, encoded = cv2.imencode(extension, _array(16, 24, 3))
    assert ok
    assert conversions.compressed_size(_compressed(encoded.tobytes())) == (16, 24)
    bomb = _compressed(_declaring(encoded.tobytes(), 65000, 65000))
    assert conversions.compressed_size(bomb) == (65000, 65000)
    with pytest.raises(ImageConversionError) as info:
        conversions.check_compressed(bomb, 50_000_000)
    assert info.value.kind == "too_large" and "65000x65000" in str(info.value) and "max_input_pixels" in str(info.value)
    conversions.check_compressed(_compressed(encoded.tobytes()), 16 * 24)  # exactly at the limit: accepted


def test_raw_images_above_the_pixel_limit_are_refused() -> None:
    msg = conversions.array_to_image(_array(10, 20, 3), _header(), "bgr8")
    conversions.check_image(msg, 200)
    with pytest.raises(ImageConversionError) as info:
        conversions.check_image(msg, 199)
    assert info.value.kind == "too_large"


def _corrupt_jpegs() -> dict[str, bytes]:
    from hybridnets_ros.testing.frames import synthetic_frame

    ok, encoded = cv2.imencode(".jpg", synthetic_frame(120, 160, seed=3))
    data = encoded.tobytes()
    scan = data.index(b"\xff\xda") + 40
    return {
        "truncated": data[: (scan + len(data)) // 2],
        "truncated, end marker kept": data[: (scan + len(data)) // 2] + b"\xff\xd9",
        "zeroed scan bytes": data[:scan] + bytes(600) + data[scan + 600:],
    }


@pytest.mark.parametrize("case", sorted(_corrupt_jpegs()))
def test_a_corrupt_jpeg_scan_is_an_error_not_a_grey_frame(case: str) -> None:
    """libjpeg only warns on these (cv2.imdecode returns a partly grey image); strict decoding refuses them."""
    with pytest.raises(ImageConversionError) as info:
        conversions.compressed_to_array(_compressed(_corrupt_jpegs()[case]))
    assert info.value.kind == "decode"


def test_flipped_bytes_in_any_decodable_format_raise_only_image_conversion_errors() -> None:
    rng = np.random.default_rng(0)
    image = _array(24, 32, 3)
    for extension in (".bmp", ".ras", ".pfm", ".png", ".jpg", ".ppm", ".tiff"):
        source = image.astype(np.float32) / 255 if extension == ".pfm" else image
        ok, encoded = cv2.imencode(extension, source)
        assert ok
        for _ in range(60):
            data = bytearray(encoded.tobytes())
            for position in rng.integers(0, len(data), rng.integers(1, 5)):
                data[position] = rng.integers(0, 256)
            msg = _compressed(bytes(data), extension[1:])
            try:
                conversions.check_compressed(msg, 50_000_000)
                conversions.compressed_to_array(msg)
            except ImageConversionError:
                pass


def test_overlay_input_to_bgr8() -> None:
    rgb = _array(3, 4, 3)
    np.testing.assert_array_equal(conversions.to_bgr8(rgb, "rgb8"), rgb[:, :, ::-1])
    grey = _array(3, 4, 1)
    assert conversions.to_bgr8(grey, "mono8").shape == (3, 4, 3)
