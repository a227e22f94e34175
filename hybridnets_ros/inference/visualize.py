"""Draw detections and segmentation over an image for humans (overlay images, rviz, CLI)."""
from __future__ import annotations

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


def draw_overlay(
    image_bgr: np.ndarray, result: FrameResult, class_names: Sequence[str], seg_names: Sequence[str]
) -> np.ndarray:
    """A copy of ``image_bgr`` (H,W,3) uint8 (or (H,W) grey) with seg classes blended at 50 % and labelled boxes."""
    if image_bgr.shape[:2] != result.seg_mask.shape:
        raise ValueError(f"image {image_bgr.shape[:2]} and seg mask {result.seg_mask.shape} differ in size")
    out = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR) if image_bgr.ndim == 2 else image_bgr.copy()
    mask = result.seg_mask
    on = mask > 0
    if on.any():
        colours = seg_colour_table(seg_names)[np.minimum(mask[on], len(seg_names))]
        blended = out[on].astype(np.float32) * (1 - MASK_ALPHA) + colours.astype(np.float32) * MASK_ALPHA
        out[on] = np.round(blended).astype(np.uint8)
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
