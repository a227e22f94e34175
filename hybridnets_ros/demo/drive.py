"""The demo's input: a short synthetic drive (smooth, continuous frames) written as a rosbag2 image bag, with the
drive camera's CameraInfo beside every frame."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybridnets_ros.ros.bag import write_image_bag
from hybridnets_ros.synth.geometry import Camera
from hybridnets_ros.synth.ground import camera_info
from hybridnets_ros.synth.scene import generate_drive
from hybridnets_ros.synth.world import sample_world

# Bag time of the first frame (2023-11-14 22:13:20 UTC): fixed, so every run of the demo has the same stamps.
START_NS = 1_700_000_000 * 1_000_000_000
FRAME_ID = "camera"


@dataclass
class DriveBag:
    """What was written: the frames' stamps (ns, = bag timestamps), how many vehicles each scene holds, the
    CameraInfo fields written with the frames and the camera body's pose ``[x, y, z, roll, pitch, yaw]`` over the
    road (for the node's ``camera.camera_pose``)."""

    path: Path
    topic: str
    stamps: list[int] = field(default_factory=list)
    vehicles: list[int] = field(default_factory=list)
    camera_info: dict = field(default_factory=dict)
    camera_pose: list[float] = field(default_factory=list)


def drive_camera(seed: int, frames: int, rate_hz: float, size: tuple[int, int]) -> Camera:
    """The camera :func:`generate_drive` renders ``(seed, frames, size, rate_hz)`` from: its world is the first draw
    of ``default_rng(seed)``. Its small pitch bounce while driving is left out: the pose is the resting one."""
    width, height = size
    return sample_world(np.random.default_rng(seed), int(width), int(height), duration=frames / rate_hz).camera


def write_drive_bag(path: Path, topic: str, frames: int, rate_hz: float, seed: int,
                    size: tuple[int, int] = (1280, 720)) -> DriveBag:
    """Render ``frames`` frames of a drive of ``size`` = (width, height) at ``rate_hz`` and write them to ``path``.

    Frame i is a bgr8 ``sensor_msgs/Image`` on ``topic`` whose header stamp and bag timestamp are both
    ``START_NS + i / rate_hz`` s, preceded by the camera's CameraInfo with the same header on the sibling
    ``camera_info`` topic. Frames are rendered while they are written, so memory stays at one frame.
    """
    camera = drive_camera(seed, frames, rate_hz, size)
    bag = DriveBag(path=Path(path), topic=topic, camera_info=camera_info(camera),
                   camera_pose=[0.0, 0.0, float(camera.height), 0.0, 0.0, 0.0])

    def images() -> Iterator[np.ndarray]:
        for scene in generate_drive(seed, frames, size, fps=rate_hz):
            bag.vehicles.append(len(scene.boxes))
            yield scene.image_bgr

    bag.stamps = write_image_bag(path, images(), topic=topic, frame_id=FRAME_ID, rate_hz=rate_hz,
                                 encoding="bgr8", start_ns=START_NS, camera_info=bag.camera_info)
    return bag
