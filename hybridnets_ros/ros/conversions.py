"""Message <-> numpy conversions for the node: pure functions, no ROS graph.

The image encodings and the raw-buffer conversion live in :mod:`hybridnets_ros.encodings`; this module applies them
to ``Image`` messages. Reading an ``Image`` in a pipeline encoding is zero-copy (a view of the message's buffer);
writing one is a single ``tobytes()`` copy (assigning an ndarray to ``msg.data`` copies element by element and is
hundreds of times slower). Invalid input raises :class:`ImageConversionError`
whose message is the reason, so the node can log it per camera and skip the frame.

Compressed images: the size declared in the header is read without decoding (:func:`compressed_size`), so a
decompression bomb can be refused before it costs anything; JPEG is decoded by libjpeg-turbo in strict mode
(``simplejpeg``), so a corrupt scan is an error instead of a grey frame; other formats by ``cv2.imdecode``.
"""
from __future__ import annotations

import io
import warnings
from typing import Sequence

import cv2
import numpy as np
import simplejpeg
from PIL import Image as PILImage
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

from hybridnets_ros.encodings import (  # ENCODINGS, PIPELINE_ENCODINGS and ImageConversionError: also for callers
    ENCODINGS,
    PIPELINE_ENCODINGS,
    ImageConversionError,
    check_layout,
    raw_to_array,
)


# cv2.cvtColor code from each pipeline encoding to bgr8 (None: already bgr8), for drawing.
_TO_BGR8 = {"bgr8": None, "rgb8": cv2.COLOR_RGB2BGR, "bgra8": cv2.COLOR_BGRA2BGR, "rgba8": cv2.COLOR_RGBA2BGR,
            "mono8": cv2.COLOR_GRAY2BGR}

JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_HEADER_START = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"  # signature, then the IHDR chunk's length and type
# JPEG colour spaces libjpeg converts to BGR itself; others (CMYK, YCCK) go through cv2.
_SIMPLEJPEG_COLOURSPACES = ("YCbCr", "Gray")

# LabelInfo has one class map for both outputs: segmentation mask values keep their own IDs (0..255, as in the
# mono8 `segmentation` image); detection classes are listed from this offset so the two can never collide.
DETECTION_CLASS_ID_OFFSET = 256
SEGMENTATION_BACKGROUND = "background"


def check_pixels(height: int, width: int, max_pixels: int, what: str) -> None:
    """Raise ImageConversionError ``too_large`` when ``what`` (an image of height x width) exceeds ``max_pixels``."""
    if height * width > max_pixels:
        raise ImageConversionError(
            "too_large", f"{what} is {width}x{height} = {height * width / 1e6:.1f} megapixels, above "
            f"max_input_pixels = {max_pixels} ({max_pixels / 1e6:.1f} megapixels): lower the camera's resolution "
            "or raise max_input_pixels")


def check_image(msg: Image, max_pixels: int) -> None:
    """Cheap checks of an ``Image`` (no pixel is read): encoding, size limit, step, data length.

    Raises ImageConversionError with the reason.
    """
    check_layout(msg.height, msg.width, msg.step, msg.encoding, len(msg.data))
    check_pixels(msg.height, msg.width, max_pixels, f"a {msg.encoding} image")


def image_to_array(msg: Image) -> np.ndarray:
    """The image of an ``Image`` as (H, W, C) uint8 in ``decoded_encoding(msg.encoding)`` (C = 1 for mono8).

    A view of the message's buffer (``step`` padding cut) for the pipeline encodings; a converted copy for the
    others. Raises ImageConversionError for an unknown encoding, a zero size, a size that does not fit the
    encoding's pixel pattern, a ``step`` shorter than a row or a ``data`` length other than ``rows * step``.
    """
    return raw_to_array(msg.height, msg.width, msg.step, msg.encoding, bool(msg.is_bigendian), msg.data)


def decoded_encoding(encoding: str) -> str:
    """The pipeline encoding ``image_to_array`` returns for a message in ``encoding`` (a key of ENCODINGS)."""
    return ENCODINGS[encoding].decoded


def to_bgr8(image: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 3) bgr8 copy of ``image`` (H, W, C) in a pipeline encoding (for drawing)."""
    code = _TO_BGR8[encoding]
    return image.copy() if code is None else cv2.cvtColor(image, code)


def _describe_compressed(msg: CompressedImage) -> str:
    return f"compressed image of {len(msg.data)} bytes (format '{msg.format}')"


def compressed_size(msg: CompressedImage) -> tuple[int, int]:
    """(height, width) that a compressed image's header declares, read without decoding the pixels.

    Raises ImageConversionError when the bytes are empty or the header is not one of a known image format.
    """
    if len(msg.data) == 0:
        raise ImageConversionError("empty", f"empty compressed image (format '{msg.format}')")
    data = memoryview(msg.data)
    try:
        if bytes(data[:3]) == JPEG_SIGNATURE:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return height, width
        if bytes(data[:16]) == PNG_HEADER_START:  # the IHDR chunk comes first: width and height, 4 bytes each
            return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
        with warnings.catch_warnings():  # Pillow's bomb and broken-tag warnings: the node reports it its own way
            warnings.simplefilter("ignore")
            with PILImage.open(io.BytesIO(data)) as header:  # lazy: reads the header only
                width, height = header.size
        return height, width
    except PILImage.DecompressionBombError as exc:
        raise ImageConversionError(
            "too_large", f"{_describe_compressed(msg)} declares more pixels than any sane camera image: {exc}") from exc
    except Exception as exc:  # a broken header: any error of the header readers means the same to the node
        raise ImageConversionError(
            "decode", f"{_describe_compressed(msg)} does not decode as jpeg or png: its header is unreadable "
            f"({type(exc).__name__}: {exc})") from exc


def check_compressed(msg: CompressedImage, max_pixels: int) -> None:
    """Cheap checks of a ``CompressedImage`` (its header only): not empty, a readable header, the size limit.

    Raises ImageConversionError with the reason.
    """
    height, width = compressed_size(msg)
    if height <= 0 or width <= 0:
        raise ImageConversionError("size", f"{_describe_compressed(msg)} declares a zero size ({width}x{height})")
    check_pixels(height, width, max_pixels, _describe_compressed(msg))


def compressed_to_array(msg: CompressedImage) -> np.ndarray:
    """Decode a ``CompressedImage`` to (H, W, 3) bgr8 (grey and alpha images are converted to colour).

    JPEG is decoded strictly: a corrupt or truncated scan (what libjpeg only warns about) is an error. Raises
    ImageConversionError when the bytes are empty or do not decode cleanly. Call :func:`check_compressed` first:
    this function decodes whatever size the header declares.
    """
    if len(msg.data) == 0:
        raise ImageConversionError("empty", f"empty compressed image (format '{msg.format}')")
    data = memoryview(msg.data)
    try:
        if bytes(data[:3]) == JPEG_SIGNATURE and simplejpeg.decode_jpeg_header(data)[2] in _SIMPLEJPEG_COLOURSPACES:
            image = simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True)
        else:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except (ValueError, cv2.error) as exc:
        raise ImageConversionError(
            "decode", f"{_describe_compressed(msg)} does not decode as jpeg or png: {str(exc).strip()}") from exc
    if image is None or image.size == 0:
        raise ImageConversionError("decode", f"{_describe_compressed(msg)} does not decode as jpeg or png")
    return image


def array_to_image(array: np.ndarray, header: Header, encoding: str) -> Image:
    """An ``Image`` holding a copy of ``array`` (H, W) or (H, W, C) uint8; ``data`` is filled with one ``tobytes``."""
    if array.dtype != np.uint8:
        raise ValueError(f"array_to_image needs uint8, got {array.dtype}")
    channels = 1 if array.ndim == 2 else array.shape[2]
    if encoding not in PIPELINE_ENCODINGS or ENCODINGS[encoding].channels != channels:
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
