"""The demo's input: a short synthetic drive (smooth, continuous frames) written as a rosbag2 image bag."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybridnets_ros.ros.bag import write_image_bag
from hybridnets_ros.synth.scene import generate_drive

# Bag time of the first frame (2023-11-14 22:13:20 UTC): fixed, so every run of the demo has the same stamps.
START_NS = 1_700_000_000 * 1_000_000_000
FRAME_ID = "camera"


@dataclass
class DriveBag:
    """What was written: the frames' stamps (ns, = bag timestamps) and how many vehicles each scene holds."""

    path: Path
    topic: str
    stamps: list[int] = field(default_factory=list)
    vehicles: list[int] = field(default_factory=list)


def write_drive_bag(path: Path, topic: str, frames: int, rate_hz: float, seed: int,
                    size: tuple[int, int] = (1280, 720)) -> DriveBag:
    """Render ``frames`` frames of a drive of ``size`` = (width, height) at ``rate_hz`` and write them to ``path``.

    Frame i is a bgr8 ``sensor_msgs/Image`` on ``topic`` whose header stamp and bag timestamp are both
    ``START_NS + i / rate_hz`` s. Frames are rendered while they are written, so memory stays at one frame.
    """
    bag = DriveBag(path=Path(path), topic=topic)

    def images() -> Iterator[np.ndarray]:
        for scene in generate_drive(seed, frames, size, fps=rate_hz):
            bag.vehicles.append(len(scene.boxes))
            yield scene.image_bgr

    bag.stamps = write_image_bag(path, images(), topic=topic, frame_id=FRAME_ID, rate_hz=rate_hz,
                                 encoding="bgr8", start_ns=START_NS)
    return bag
