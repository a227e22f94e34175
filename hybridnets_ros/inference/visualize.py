"""Draw detections and segmentation over an image for humans (overlay images, rviz, CLI)."""
from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np

from hybridnets_ros.inference.postprocess import FrameResult

# BGR colours by seg class name, fixed so a given class always looks the same.
SEG_COLOURS = {
    "road": (60, 200, 60),
    "drivable": (60, 200, 60),
    "lane": (0, 40, 255),
}
# Used in turn for seg classes without a named colour and for detection classes.
PALETTE = [(0, 215, 255), (255, 160, 0), (200, 0, 200), (255, 255, 0), (0, 128, 255), (128, 0, 255), (0, 255, 128)]
BOX_COLOURS = [(0, 220, 255), (255, 120, 0), (255, 0, 200), (0, 255, 0), (0, 140, 255)]
MASK_ALPHA = 0.5


def seg_colour_table(seg_names: Sequence[str]) -> np.ndarray:
    """(len(seg_names)+1, 3) uint8 BGR colour per class ID; row 0 (background) is unused."""
    table = np.zeros((len(seg_names) + 1, 3), dtype=np.uint8)
    spare = iter(PALETTE * (len(seg_names) // len(PALETTE) + 1))
    for k, name in enumerate(seg_names, start=1):
        key = next((c for c in SEG_COLOURS if c in name.lower()), None)
        table[k] = SEG_COLOURS[key] if key else next(spare)
    return table


@functools.lru_cache(maxsize=16)
def _colour_lut(seg_names: tuple[str, ...]) -> np.ndarray:
    """(256, 1, 3) uint8 cv2 LUT: mask value -> BGR colour; values above the last class take its colour."""
    table = seg_colour_table(seg_names)
    return table[np.minimum(np.arange(256), len(seg_names))].reshape(256, 1, 3)


def blend_segmentation(image_bgr: np.ndarray, mask: np.ndarray, seg_names: Sequence[str]) -> np.ndarray:
    """A new (H,W,3) uint8 image: ``image_bgr`` blended at ``MASK_ALPHA`` with each class colour where ``mask`` (H,W)
    is > 0, unchanged where it is 0.

    Whole-frame cv2 passes instead of boolean indexing (which gathers and scatters every masked pixel): a colour
    layer by table lookup, one weighted sum (rounded half to even, like ``np.round``), the background copied back.
    """
    lut = _colour_lut(tuple(seg_names))
    colours = cv2.LUT(cv2.merge((mask, mask, mask)), lut)
    out = cv2.addWeighted(image_bgr, 1 - MASK_ALPHA, colours, MASK_ALPHA, 0.0)
    cv2.copyTo(image_bgr, (mask == 0).view(np.uint8), out)
    return out


def draw_overlay(
    image_bgr: np.ndarray, result: FrameResult, class_names: Sequence[str], seg_names: Sequence[str]
) -> np.ndarray:
    """A copy of ``image_bgr`` (H,W,3) uint8 (or (H,W) grey) with seg classes blended at 50 % and labelled boxes."""
    if image_bgr.shape[:2] != result.seg_mask.shape:
        raise ValueError(f"image {image_bgr.shape[:2]} and seg mask {result.seg_mask.shape} differ in size")
    image = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR) if image_bgr.ndim == 2 else image_bgr
    out = blend_segmentation(image, np.ascontiguousarray(result.seg_mask), seg_names)
    det = result.detections
    scale = max(0.4, min(out.shape[:2]) / 900)
    thickness = max(1, int(round(scale * 2)))
    for box, score, cls in zip(det.boxes, det.scores, det.class_ids):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        colour = BOX_COLOURS[int(cls) % len(BOX_COLOURS)]
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        name = class_names[cls] if 0 <= cls < len(class_names) else str(int(cls))
        label = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(y1 - th - base, 0)
        cv2.rectangle(out, (x1, top), (x1 + tw, top + th + base), colour, cv2.FILLED)
        cv2.putText(out, label, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return out
