"""Camera image encodings (the ROS ``sensor_msgs/Image`` names) and the conversion of a raw image buffer to 8 bits.

This module owns the encoding table (:data:`ENCODINGS`): how each encoding is laid out and which of the five
8-bit :data:`PIPELINE_ENCODINGS` it becomes. It imports only numpy and OpenCV, so the node's message wrappers
(``ros/conversions.py``), the bag tools, the inference pipeline and training (which never imports ROS) share it.

A raw buffer in a pipeline encoding is read zero-copy (``np.frombuffer``, row padding cut by a strided view); other
encodings are converted with OpenCV's vectorised colour conversions. Invalid input raises
:class:`ImageConversionError` whose message is the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Encoding:
    """How one image encoding is laid out and becomes an 8-bit image in a pipeline encoding.

    A row holds ``width * channels * bytes_per_channel`` bytes; 4:2:0 semi-planar encodings (``chroma_rows``:
    nv12, nv21) have height / 2 rows of interleaved chroma under the ``height`` luma rows. 16-bit samples keep
    their high byte (byte order from ``is_bigendian``): 16 -> 8 bits is a strided view, no arithmetic. Then
    ``cv2_code`` (a ``cv2.cvtColor`` code; None: nothing to do) gives an image in ``decoded``. Width and height
    must be multiples of ``block`` (the period of the pixel pattern: 2 for chroma pairs and Bayer mosaics).
    """

    channels: int
    bytes_per_channel: int
    decoded: str
    cv2_code: int | None = None
    chroma_rows: bool = False
    block: tuple[int, int] = (1, 1)  # (rows, columns)


def _bayer(code: int, bytes_per_channel: int) -> Encoding:
    return Encoding(1, bytes_per_channel, "bgr8", code, block=(2, 2))


# The pipeline takes these five as they are (zero-copy); everything else is converted to one of them.
PIPELINE_ENCODINGS = ("bgr8", "rgb8", "bgra8", "rgba8", "mono8")
# Pipeline encodings whose first three channels are in BGR order.
BGR_ORDERED = ("bgr8", "bgra8")
ENCODINGS: dict[str, Encoding] = {
    "bgr8": Encoding(3, 1, "bgr8"),
    "rgb8": Encoding(3, 1, "rgb8"),
    "bgra8": Encoding(4, 1, "bgra8"),
    "rgba8": Encoding(4, 1, "rgba8"),
    "mono8": Encoding(1, 1, "mono8"),
    "bgr16": Encoding(3, 2, "bgr8"),
    "rgb16": Encoding(3, 2, "rgb8"),
    "bgra16": Encoding(4, 2, "bgra8"),
    "rgba16": Encoding(4, 2, "rgba8"),
    "mono16": Encoding(1, 2, "mono8"),
    "yuv422": Encoding(2, 1, "bgr8", cv2.COLOR_YUV2BGR_UYVY, block=(1, 2)),  # UYVY
    "uyvy": Encoding(2, 1, "bgr8", cv2.COLOR_YUV2BGR_UYVY, block=(1, 2)),
    "yuv422_yuy2": Encoding(2, 1, "bgr8", cv2.COLOR_YUV2BGR_YUY2, block=(1, 2)),  # YUYV
    "yuyv": Encoding(2, 1, "bgr8", cv2.COLOR_YUV2BGR_YUY2, block=(1, 2)),
    "nv21": Encoding(1, 1, "bgr8", cv2.COLOR_YUV2BGR_NV21, chroma_rows=True, block=(2, 2)),
    "nv12": Encoding(1, 1, "bgr8", cv2.COLOR_YUV2BGR_NV12, chroma_rows=True, block=(2, 2)),
    "bayer_rggb8": _bayer(cv2.COLOR_BayerRGGB2BGR, 1),
    "bayer_bggr8": _bayer(cv2.COLOR_BayerBGGR2BGR, 1),
    "bayer_gbrg8": _bayer(cv2.COLOR_BayerGBRG2BGR, 1),
    "bayer_grbg8": _bayer(cv2.COLOR_BayerGRBG2BGR, 1),
    "bayer_rggb16": _bayer(cv2.COLOR_BayerRGGB2BGR, 2),
    "bayer_bggr16": _bayer(cv2.COLOR_BayerBGGR2BGR, 2),
    "bayer_gbrg16": _bayer(cv2.COLOR_BayerGBRG2BGR, 2),
    "bayer_grbg16": _bayer(cv2.COLOR_BayerGRBG2BGR, 2),
}
# Encodings refused with their own reason: depth maps are distances, not light.
DEPTH_ENCODINGS = ("16UC1", "32FC1")
# cv2.cvtColor code from each pipeline encoding to rgb8 (None: already rgb8).
_TO_RGB8 = {"rgb8": None, "bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
            "mono8": cv2.COLOR_GRAY2RGB}


class ImageConversionError(ValueError):
    """An image buffer that cannot be turned into an image; ``str(exc)`` is the reason, ``kind`` its category
    (encoding, size, step, length, empty, decode, too_large) for per-kind rate limiting and counting."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def check_layout(height: int, width: int, step: int, encoding: str, data_length: int) -> tuple[Encoding, int, int]:
    """The encoding's :class:`Encoding` and the buffer's (rows, row bytes), after checking encoding, size, step and
    data length; raises ImageConversionError with the reason."""
    layout = ENCODINGS.get(encoding)
    if layout is None:
        if encoding in DEPTH_ENCODINGS:
            raise ImageConversionError(
                "encoding", f"'{encoding}' is a depth image, not a camera image: subscribe the node to the "
                "camera's colour or mono stream")
        raise ImageConversionError(
            "encoding", f"unsupported encoding '{encoding}' (supported: {', '.join(ENCODINGS)})")
    if height == 0 or width == 0:
        raise ImageConversionError("size", f"zero-sized image ({width}x{height})")
    block_rows, block_columns = layout.block
    if height % block_rows or width % block_columns:
        raise ImageConversionError(
            "size", f"a {encoding} image needs a width divisible by {block_columns} and a height divisible by "
            f"{block_rows}, got {width}x{height}")
    row_bytes = width * layout.channels * layout.bytes_per_channel
    if step < row_bytes:
        raise ImageConversionError(
            "step", f"step {step} is shorter than a row of {width} {encoding} pixels ({row_bytes} bytes)")
    rows = height + height // 2 if layout.chroma_rows else height
    if data_length != rows * step:
        raise ImageConversionError(
            "length", f"data length {data_length} != height * step = {rows} * {step} = {rows * step}"
            + (f" ({encoding}: {height} luma + {height // 2} chroma rows)" if layout.chroma_rows else ""))
    return layout, rows, row_bytes


def raw_to_array(height: int, width: int, step: int, encoding: str, is_bigendian: bool, data) -> np.ndarray:
    """A raw image buffer (``data``: bytes-like or 1-D uint8 array of ``rows * step`` bytes) as (H, W, C) uint8 in
    ``ENCODINGS[encoding].decoded`` (C = 1 for mono8).

    A view of ``data`` (``step`` padding cut) for the pipeline encodings; a converted copy for the others. Raises
    ImageConversionError for an unknown encoding, a zero size, a size that does not fit the encoding's pixel
    pattern, a ``step`` shorter than a row or a data length other than ``rows * step``.
    """
    layout, rows, row_bytes = check_layout(height, width, step, encoding, len(data))
    samples = np.frombuffer(data, dtype=np.uint8).reshape(rows, step)[:, :row_bytes]
    if layout.bytes_per_channel == 2:
        samples = samples[:, (0 if is_bigendian else 1)::2]  # the high byte of every sample
    if layout.cv2_code is None:
        return samples.reshape(height, width, layout.channels)
    shape = (rows, width) if layout.channels == 1 else (rows, width, layout.channels)
    return cv2.cvtColor(np.ascontiguousarray(samples).reshape(shape), layout.cv2_code)


def to_rgb8(image: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 3) contiguous rgb8 of ``image`` (H, W, C) in the pipeline encoding ``encoding``."""
    code = _TO_RGB8[encoding]
    image = np.ascontiguousarray(image)  # cv2 needs it; a strided view of a 16-bit or padded buffer is not
    return image if code is None else cv2.cvtColor(image, code)
