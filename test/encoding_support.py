"""Camera images in every encoding the node accepts, made from one bgr8 frame (what a camera driver would publish),
for the conversion and node tests."""
from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

# Bayer pattern -> (row, column) of the red and the blue sample in each 2x2 cell (green fills the other two).
BAYER_RED_BLUE = {"rggb": ((0, 0), (1, 1)), "bggr": ((1, 1), (0, 0)), "gbrg": ((1, 0), (0, 1)),
                  "grbg": ((0, 1), (1, 0))}
_FROM_BGR8 = {"rgb8": cv2.COLOR_BGR2RGB, "bgra8": cv2.COLOR_BGR2BGRA, "rgba8": cv2.COLOR_BGR2RGBA,
              "mono8": cv2.COLOR_BGR2GRAY}


def _eight_bit(bgr: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, C) uint8 of ``bgr`` (H, W, 3) in the 8-bit encoding ``encoding`` (a pipeline encoding)."""
    code = _FROM_BGR8.get(encoding)
    out = bgr if code is None else cv2.cvtColor(bgr, code)
    return out.reshape(*bgr.shape[:2], -1)


def _bayer(bgr: np.ndarray, pattern: str) -> np.ndarray:
    (red_row, red_col), (blue_row, blue_col) = BAYER_RED_BLUE[pattern]
    mosaic = bgr[:, :, 1].copy()
    mosaic[red_row::2, red_col::2] = bgr[red_row::2, red_col::2, 2]
    mosaic[blue_row::2, blue_col::2] = bgr[blue_row::2, blue_col::2, 0]
    return mosaic


def _semi_planar(bgr: np.ndarray, v_first: bool) -> np.ndarray:
    """4:2:0 semi-planar (H * 3/2, W): the luma rows, then interleaved chroma (UV for nv12, VU for nv21)."""
    height, width = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)  # Y rows, then the U plane, then the V plane
    chroma = i420[height:].reshape(2, height // 2, width // 2)
    u, v = chroma[0], chroma[1]
    pairs = np.stack([v, u] if v_first else [u, v], axis=-1).reshape(height // 2, width)
    return np.concatenate([i420[:height], pairs])


def samples(bgr: np.ndarray, encoding: str) -> np.ndarray:
    """The pixel samples of ``bgr`` (H, W, 3) uint8 as a camera publishing ``encoding`` sends them: (rows, W, C)
    uint8 or uint16 (16-bit encodings: the 8-bit value times 257, so the high byte is the 8-bit value)."""
    if encoding.endswith("16"):
        eight = samples(bgr, encoding[:-2] + "8")
        return eight.astype(np.uint16) * 257
    if encoding.startswith("bayer_"):
        return _bayer(bgr, encoding[len("bayer_"):-1])[:, :, None]
    if encoding in ("yuv422", "uyvy"):
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_UYVY)
    if encoding in ("yuv422_yuy2", "yuyv"):
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_YUY2)
    if encoding in ("nv12", "nv21"):
        return _semi_planar(bgr, v_first=encoding == "nv21")[:, :, None]
    return _eight_bit(bgr, encoding)


def encoded_image(bgr: np.ndarray, encoding: str, header: Header, big_endian: bool = False,
                  padding: int = 0) -> Image:
    """An ``Image`` of ``bgr`` (H, W, 3) uint8 in ``encoding``, ``padding`` extra bytes at the end of every row."""
    values = samples(bgr, encoding)
    if values.dtype == np.uint16:
        values = values.astype(">u2" if big_endian else "<u2")
    rows = values.reshape(values.shape[0], -1).view(np.uint8)
    if padding:
        rows = np.concatenate([rows, np.full((rows.shape[0], padding), 255, np.uint8)], axis=1)
    msg = Image(header=header, height=bgr.shape[0], width=bgr.shape[1], encoding=encoding,
                is_bigendian=int(big_endian), step=rows.shape[1])
    msg.data = np.ascontiguousarray(rows).tobytes()
    return msg
