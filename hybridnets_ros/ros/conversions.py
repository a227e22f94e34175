"""Message <-> numpy conversions for the node: pure functions, no ROS graph.

Reading an ``Image`` is zero-copy (``np.frombuffer`` over the message's buffer, row padding cut by a strided view);
writing one is a single ``tobytes()`` copy (assigning an ndarray to ``msg.data`` copies element by element and is
hundreds of times slower). Invalid input raises :class:`ImageConversionError` whose message is the reason, so the
node can log it per camera and skip the frame.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import (
    BoundingBox2D,
    Detection2D,
    Detection2DArray,
    LabelInfo,
    ObjectHypothesisWithPose,
    VisionClass,
)

# Channels per supported encoding; all of them are 8 bits per channel, so endianness never matters.
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}

# LabelInfo has one class map for both outputs: segmentation mask values keep their own IDs (0..255, as in the
# mono8 `segmentation` image); detection classes are listed from this offset so the two can never collide.
DETECTION_CLASS_ID_OFFSET = 256
SEGMENTATION_BACKGROUND = "background"


class ImageConversionError(ValueError):
    """A message that cannot be turned into an image; ``str(exc)`` is the reason, ``kind`` its category
    (encoding, size, step, length, empty, decode) for per-kind rate limiting and counting."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def image_to_array(msg: Image) -> np.ndarray:
    """View an ``Image`` as (H, W, C) uint8 without copying (C = 1 for mono8); ``step`` padding is honoured.

    Raises ImageConversionError for an unknown encoding, a zero size, a ``step`` shorter than a row or a ``data``
    length other than ``height * step``.
    """
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise ImageConversionError(
            "encoding", f"unsupported encoding '{msg.encoding}' (supported: {', '.join(CHANNELS)})"
        )
    height, width, step = msg.height, msg.width, msg.step
    if height == 0 or width == 0:
        raise ImageConversionError("size", f"zero-sized image ({width}x{height})")
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageConversionError(
            "step", f"step {step} is shorter than a row of {width} {msg.encoding} pixels ({row_bytes} bytes)")
    if len(msg.data) != height * step:
        raise ImageConversionError(
            "length", f"data length {len(msg.data)} != height * step = {height} * {step} = {height * step}"
        )
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)
    return rows[:, :row_bytes].reshape(height, width, channels)


def compressed_to_array(msg: CompressedImage) -> np.ndarray:
    """Decode a jpeg/png ``CompressedImage`` to (H, W, 3) bgr8 (grey and alpha images are converted to colour).

    Raises ImageConversionError when the bytes are empty or do not decode.
    """
    if len(msg.data) == 0:
        raise ImageConversionError("empty", f"empty compressed image (format '{msg.format}')")
    image = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageConversionError(
            "decode", f"compressed image of {len(msg.data)} bytes (format '{msg.format}') does not decode as jpeg or png"
        )
    return image


def array_to_image(array: np.ndarray, header: Header, encoding: str) -> Image:
    """An ``Image`` holding a copy of ``array`` (H, W) or (H, W, C) uint8; ``data`` is filled with one ``tobytes``."""
    if array.dtype != np.uint8:
        raise ValueError(f"array_to_image needs uint8, got {array.dtype}")
    channels = 1 if array.ndim == 2 else array.shape[2]
    if CHANNELS.get(encoding) != channels:
        raise ValueError(f"encoding '{encoding}' does not match an array of shape {array.shape}")
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def class_mask(seg_mask: np.ndarray, class_id: int) -> np.ndarray:
    """(H, W) uint8 mask: 255 where ``seg_mask == class_id``, else 0."""
    return np.multiply(seg_mask == class_id, np.uint8(255), dtype=np.uint8)


def detections_to_msg(
    header: Header,
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    class_names: Sequence[str],
) -> Detection2DArray:
    """A ``Detection2DArray`` of N boxes (N, 4) x1y1x2y2 in original image pixels with their scores and class indices.

    Each detection carries the image header, one hypothesis (class name, score) and the box as centre + size;
    ``id`` stays empty (no tracking).
    """
    out = Detection2DArray()
    out.header = header
    centres = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    sizes = boxes[:, 2:] - boxes[:, :2]
    for (cx, cy), (w, h), score, cls in zip(centres.tolist(), sizes.tolist(), scores.tolist(), class_ids.tolist()):
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = class_names[cls]
        hypothesis.hypothesis.score = score
        bbox = BoundingBox2D()
        bbox.center.position.x = cx
        bbox.center.position.y = cy
        bbox.size_x = w
        bbox.size_y = h
        detection = Detection2D()
        detection.header = header
        detection.results = [hypothesis]
        detection.bbox = bbox
        out.detections.append(detection)
    return out


def detection_boxes(msg: Detection2DArray) -> np.ndarray:
    """(N, 4) float64 x1y1x2y2 boxes of a ``Detection2DArray`` (the inverse of the box part of detections_to_msg)."""
    if not msg.detections:
        return np.zeros((0, 4))
    cxcywh = np.array(
        [(d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y) for d in msg.detections]
    )
    half = cxcywh[:, 2:] * 0.5
    return np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)


def label_info_msg(
    header: Header, class_names: Sequence[str], seg_names: Sequence[str], threshold: float
) -> LabelInfo:
    """The class maps of both outputs in one ``LabelInfo``.

    Segmentation: ID k is the value k in the ``segmentation`` mask (0 background, k = ``seg_names[k-1]``).
    Detection: ID ``DETECTION_CLASS_ID_OFFSET + i`` is ``class_names[i]`` (the string in ``hypothesis.class_id``).
    ``threshold`` is the current detection score threshold.
    """
    msg = LabelInfo()
    msg.header = header
    names = [(0, SEGMENTATION_BACKGROUND)] + [(k + 1, name) for k, name in enumerate(seg_names)]
    names += [(DETECTION_CLASS_ID_OFFSET + i, name) for i, name in enumerate(class_names)]
    msg.class_map = [VisionClass(class_id=class_id, class_name=name) for class_id, name in names]
    msg.threshold = float(threshold)
    return msg
