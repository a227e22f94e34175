"""Training augmentation applied identically to an image, its boxes and its segmentation labels.

Everything works in the network-input frame (after the letterbox), on numpy arrays, with cv2 doing the pixel work:

* random perspective: rotation, scale, translation (and optional shear/perspective) as one 3x3 matrix; the image is
  warped bilinearly with the letterbox grey as border, the labels with nearest neighbour and 0 as border, and each
  box is replaced by the bounding box of its 4 transformed corners, clipped to the canvas and dropped when too little
  of it survives;
* HSV gains through per-channel lookup tables, on the image content only (the letterbox padding keeps its grey);
* horizontal flip of image, labels and boxes.

Segmentation labels travel as one uint8 bit field (bit k set = class k+1 present, see ``pack_masks``), so one
nearest-neighbour warp moves every class at once and overlaps survive exactly.

Randomness comes from the ``numpy.random.Generator`` passed in: the caller seeds it per sample, which makes the
augmentation reproducible whatever the number of loader workers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

LETTERBOX_GREY = 114


@dataclass(frozen=True)
class AugmentConfig:
    degrees: float = 10.0        # rotation range +-degrees
    translate: float = 0.1       # translation range +- fraction of the canvas
    scale: float = 0.25          # zoom range 1 +- scale
    shear: float = 0.0           # shear range +-degrees
    perspective: float = 0.0     # perspective coefficient range +-perspective (0: affine)
    hsv_h: float = 0.015         # hue gain range (fraction)
    hsv_s: float = 0.7           # saturation gain range
    hsv_v: float = 0.4           # value gain range
    fliplr: float = 0.5          # probability of a horizontal flip
    min_box_side: float = 2.0    # boxes thinner than this after warping are dropped (px)
    min_box_area_kept: float = 0.1   # ... or keeping less than this fraction of their (scaled) area
    max_box_aspect: float = 20.0     # ... or longer than this ratio


@dataclass
class Sample:
    """One training sample in the network-input frame.

    image (H,W,3) uint8 RGB; boxes (N,4) float32 x1,y1,x2,y2 px; classes (N,) int64; labels (H,W) uint8 bit field.
    ``content`` is the (top, left, height, width) rectangle of real image inside the letterbox padding.
    """

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    labels: np.ndarray
    content: tuple[int, int, int, int]


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(S,H,W) masks (>0 = on) -> (H,W) uint8 with bit k set where mask k is on. S <= 8."""
    if masks.shape[0] > 8:
        raise ValueError(f"at most 8 segmentation classes fit the uint8 label field, got {masks.shape[0]}")
    weights = (1 << np.arange(masks.shape[0], dtype=np.uint8)).reshape(-1, 1, 1)
    return ((masks > 0).astype(np.uint8) * weights).sum(axis=0, dtype=np.uint8)


def augment(sample: Sample, config: AugmentConfig, rng: np.random.Generator) -> Sample:
    """HSV, random perspective and flip, in that order; returns a new Sample (inputs are not modified)."""
    image = augment_hsv(sample.image, config, rng, sample.content)
    image, boxes, classes, labels = random_perspective(image, sample.boxes, sample.classes, sample.labels, config, rng)
    if rng.random() < config.fliplr:
        image, boxes, labels = flip_horizontal(image, boxes, labels)
    return Sample(image=image, boxes=boxes, classes=classes, labels=labels, content=sample.content)


def augment_hsv(
    image: np.ndarray, config: AugmentConfig, rng: np.random.Generator, content: tuple[int, int, int, int]
) -> np.ndarray:
    """Random hue/saturation/value gains on the content rectangle of an (H,W,3) uint8 RGB image."""
    gains = rng.uniform(-1.0, 1.0, 3) * (config.hsv_h, config.hsv_s, config.hsv_v) + 1.0
    if np.allclose(gains, 1.0):
        return image.copy()
    top, left, height, width = content
    out = image.copy()
    region = out[top : top + height, left : left + width]
    hue, sat, val = cv2.split(cv2.cvtColor(region, cv2.COLOR_RGB2HSV))
    levels = np.arange(256, dtype=np.float32)
    # OpenCV's 8-bit hue range is 0..179, so the hue table wraps at 180.
    lut_hue = ((levels * gains[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(levels * gains[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(levels * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    out[top : top + height, left : left + width] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return out


def perspective_matrix(
    height: int, width: int, config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """A random 3x3 warp about the canvas centre and its zoom factor."""
    to_centre = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]], dtype=np.float64)
    persp = np.eye(3)
    persp[2, 0] = rng.uniform(-config.perspective, config.perspective)
    persp[2, 1] = rng.uniform(-config.perspective, config.perspective)
    angle = math.radians(rng.uniform(-config.degrees, config.degrees))
    zoom = rng.uniform(1.0 - config.scale, 1.0 + config.scale)
    cos, sin = zoom * math.cos(angle), zoom * math.sin(angle)
    # Counter-clockwise on screen (y points down), like cv2.getRotationMatrix2D.
    rotate = np.array([[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]], dtype=np.float64)
    shear = np.eye(3)
    shear[0, 1] = math.tan(math.radians(rng.uniform(-config.shear, config.shear)))
    shear[1, 0] = math.tan(math.radians(rng.uniform(-config.shear, config.shear)))
    shift = np.eye(3)
    shift[0, 2] = (0.5 + rng.uniform(-config.translate, config.translate)) * width
    shift[1, 2] = (0.5 + rng.uniform(-config.translate, config.translate)) * height
    return shift @ shear @ rotate @ persp @ to_centre, zoom


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N,4) x1y1x2y2 -> (N,4) axis-aligned bounds of the 4 corners under a 3x3 homography."""
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack(pair, -1) for pair in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))], 1)  # (N,4,2)
    homog = np.concatenate([corners, np.ones((*corners.shape[:2], 1))], axis=-1) @ matrix.T
    xy = homog[..., :2] / homog[..., 2:3]
    return np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)


def random_perspective(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    labels: np.ndarray,
    config: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Warp image (H,W,3), labels (H,W) and boxes (N,4) by one random matrix; drops boxes that leave the canvas."""
    height, width = image.shape[:2]
    matrix, zoom = perspective_matrix(height, width, config, rng)
    if np.allclose(matrix, np.eye(3)):
        return image.copy(), boxes.copy(), classes.copy(), labels.copy()
    size = (width, height)
    grey = (LETTERBOX_GREY,) * 3
    if config.perspective:
        image = cv2.warpPerspective(image, matrix, size, flags=cv2.INTER_LINEAR, borderValue=grey)
        labels = cv2.warpPerspective(labels, matrix, size, flags=cv2.INTER_NEAREST, borderValue=0)
    else:
        image = cv2.warpAffine(image, matrix[:2], size, flags=cv2.INTER_LINEAR, borderValue=grey)
        labels = cv2.warpAffine(labels, matrix[:2], size, flags=cv2.INTER_NEAREST, borderValue=0)
    if len(boxes) == 0:
        return image, boxes.copy(), classes.copy(), labels
    warped = transform_boxes(boxes.astype(np.float64), matrix)
    warped[:, [0, 2]] = warped[:, [0, 2]].clip(0, width)
    warped[:, [1, 3]] = warped[:, [1, 3]].clip(0, height)
    keep = keep_boxes(boxes, warped, zoom, config)
    return image, warped[keep].astype(np.float32), classes[keep], labels


def keep_boxes(before: np.ndarray, after: np.ndarray, zoom: float, config: AugmentConfig) -> np.ndarray:
    """(N,) bool: warped boxes still big enough, with enough of their area inside the canvas, and not degenerate."""
    w0, h0 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w1, h1 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w1 / np.maximum(h1, 1e-6), h1 / np.maximum(w1, 1e-6))
    kept_fraction = (w1 * h1) / np.maximum(w0 * h0 * zoom * zoom, 1e-6)
    return (
        (w1 > config.min_box_side)
        & (h1 > config.min_box_side)
        & (kept_fraction > config.min_box_area_kept)
        & (aspect < config.max_box_aspect)
    )


def flip_horizontal(
    image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirror image (H,W,3), labels (H,W) and boxes (N,4) about the vertical centre line of the canvas."""
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), flipped, np.ascontiguousarray(labels[:, ::-1])
