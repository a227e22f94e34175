"""The package's conventions, written once (no torch, no ROS): what the node, the pipeline, export, training and the
CLIs must agree on about images, network inputs, segmentation outputs and detection thresholds."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Letterbox padding grey, the value the reference implementation pads with (and the models were trained on).
PAD_VALUE = 114
# P7 is input/128 and the BiFPN adds upsampled P7 to P6: network input H and W must be multiples of it.
NETWORK_STRIDE = 128
PYRAMID_STRIDES = (8, 16, 32, 64, 128)  # P3..P7
SEG_MODES = ("binary", "multiclass", "multilabel")
# What OpenCV reads as a still image, by file suffix (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")


def check_input_hw(input_hw: Sequence[int], what: str = "network input") -> tuple[int, int]:
    """(H, W) as ints, or ValueError naming ``what`` when it is not two positive multiples of NETWORK_STRIDE."""
    size = tuple(int(v) for v in input_hw)
    if len(size) != 2 or any(v <= 0 or v % NETWORK_STRIDE for v in size):
        shown = "x".join(map(str, size)) + (" (HxW)" if len(size) == 2 else "")
        raise ValueError(
            f"{what} {shown} is not supported: H and W must be multiples of {NETWORK_STRIDE} (the network downsamples "
            f"to 1/{NETWORK_STRIDE} and adds upsampled levels to the finer ones); letterbox or resize to a size "
            f"divisible by {NETWORK_STRIDE} such as 384x640"
        )
    return size


@dataclass
class DetectionThresholds:
    """Detection thresholds; mutable so callers can change them between frames. The node's parameters and
    ``config/hybridnets.yaml`` default to these values (a test holds them equal)."""

    score_threshold: float = 0.25
    nms_iou_threshold: float = 0.3
    pre_nms_top_k: int = 1000
    max_detections: int = 100

    def validate(self) -> None:
        """Raise ValueError for values that cannot work."""
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if not 0.0 <= self.nms_iou_threshold <= 1.0:
            raise ValueError(f"nms_iou_threshold must be in [0, 1], got {self.nms_iou_threshold}")
        if self.pre_nms_top_k < 1 or self.max_detections < 1:
            raise ValueError(
                f"pre_nms_top_k and max_detections must be >= 1, got {self.pre_nms_top_k}, {self.max_detections}"
            )
