"""Where a camera is: the pose of its optical frame in the ground frame (whose z = 0 plane is the road).

Two ways to give it: a REP 103 body pose ``[x, y, z, roll, pitch, yaw]`` (x forward, y left, z up; the node's
``C.camera_pose`` parameter), turned into the optical frame (z forward, x right, y down) by the fixed rotation every
ROS camera driver uses; or a transform of the optical frame itself (translation + quaternion, as TF gives it).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Columns: the optical frame's x (right), y (down) and z (forward) axes in the camera body frame (x fwd, y left, z up).
OPTICAL_IN_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


class CameraPoseError(ValueError):
    """A pose that cannot be used; the message says why."""


@dataclass(frozen=True)
class CameraPose:
    """``rotation`` (3,3) maps optical-frame vectors into the ground frame; ``position`` (3,) is the optical centre
    in the ground frame. ``source`` says where the pose came from (for logs and diagnostics)."""

    rotation: np.ndarray
    position: np.ndarray
    source: str = ""

    def key(self) -> tuple[float, ...]:
        """Hashable identity of the geometry (rounded so that re-reading the same TF gives the same key)."""
        return tuple(np.round(np.concatenate([self.rotation.ravel(), self.position]), 9).tolist())

    def to_optical(self, points: np.ndarray) -> np.ndarray:
        """Ground-frame points (N,3) -> optical-frame points (N,3)."""
        return (np.asarray(points, np.float64) - self.position) @ self.rotation


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """REP 103 fixed-axis roll, pitch, yaw (rad) -> (3,3) rotation Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


def rotation_quaternion(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Unit quaternion (normalised here) -> (3,3) rotation. Raises CameraPoseError for a zero quaternion."""
    q = np.array([x, y, z, w], np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-9:
        raise CameraPoseError(f"rotation quaternion {q.tolist()} is not a rotation (zero length)")
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def quaternion_from_rotation(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(3,3) rotation -> unit quaternion (x, y, z, w) with w >= 0."""
    r = np.asarray(rotation, np.float64)
    w = np.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1])
    q = np.array([x, y, z, w]) / np.linalg.norm([x, y, z, w])
    return tuple(float(v) for v in q)


def pose_from_body(values: Sequence[float], source: str = "camera_pose parameter") -> CameraPose:
    """``[x, y, z, roll, pitch, yaw]`` of the camera body frame in the ground frame -> the optical frame's pose."""
    values = [float(v) for v in values]
    if len(values) != 6 or not np.all(np.isfinite(values)):
        raise CameraPoseError(f"camera_pose must be 6 finite numbers [x, y, z, roll, pitch, yaw] (m, rad), got "
                              f"{values}")
    body = rotation_rpy(*values[3:])
    return CameraPose(body @ OPTICAL_IN_BODY, np.array(values[:3]), source)


def parse_body_pose(text: str) -> list[float]:
    """``"[x, y, z, roll, pitch, yaw]"`` (brackets optional, commas or spaces) -> 6 floats; ``""`` -> ``[]``.

    Raises CameraPoseError saying what is wrong (for command-line and launch arguments).
    """
    items = [item for item in re.split(r"[\s,]+", text.strip().strip("[]").strip()) if item]
    try:
        values = [float(item) for item in items]
    except ValueError as exc:
        raise CameraPoseError(f"camera_pose '{text}' is not a list of numbers: give [x, y, z, roll, pitch, yaw] "
                              "(metres, radians)") from exc
    if values:
        pose_from_body(values)
    return values


def pose_from_transform(translation: Sequence[float], quaternion: Sequence[float], source: str) -> CameraPose:
    """Transform of the optical frame into the ground frame (TF convention) -> CameraPose."""
    position = np.asarray(translation, np.float64)
    if position.shape != (3,) or not np.all(np.isfinite(position)):
        raise CameraPoseError(f"translation {list(translation)} is not 3 finite numbers")
    return CameraPose(rotation_quaternion(*quaternion), position, source)


def compose(parent: CameraPose, child: CameraPose) -> CameraPose:
    """Pose of ``child`` (given in ``parent``'s frame) in ``parent``'s parent frame."""
    return CameraPose(parent.rotation @ child.rotation, parent.rotation @ child.position + parent.position,
                      child.source or parent.source)
