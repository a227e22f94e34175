"""Frames to send to the node: synthetic camera images and headers that tell them apart."""
from __future__ import annotations

import itertools

import numpy as np
from std_msgs.msg import Header

from hybridnets_ros.synth.scene import generate_scene

_stamps = itertools.count(1)


def unique_header(frame_id: str = "camera_optical_frame", sec: int | None = None) -> Header:
    """A header with a stamp no other frame of this process had (outputs are matched to inputs by header)."""
    n = next(_stamps)
    header = Header(frame_id=frame_id)
    header.stamp.sec = sec if sec is not None else 1_000_000 + n
    header.stamp.nanosec = (n * 7919) % 1_000_000_000
    return header


def synthetic_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 bgr: the synthetic driving scene ``seed`` at that size (the same bytes for the same
    arguments)."""
    return generate_scene(seed, (width, height)).image_bgr
