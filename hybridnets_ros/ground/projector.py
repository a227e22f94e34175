"""Ray-to-ground lookup of one camera: where every pixel's ray meets the road plane, and which pixel sees each cell.

Built once per (camera model, pose, max range) and reused for every frame, so projecting a frame is a gather.
The ground is the plane z = 0 of the ground frame. A pixel is valid when its ray points down to the plane and meets
it within ``max_range`` (horizontal distance from the point under the camera).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from hybridnets_ros.ground.camera import CameraModel
from hybridnets_ros.ground.pose import CameraPose

# Rays flatter than this (z component of the unit ray) never reach the ground within any sensible range.
MIN_DOWNWARD = 1e-6
# A cell whose projected pixel does not undistort back onto its own ray (distortion folding over) is not seen.
ROUND_TRIP_TOLERANCE = 1e-3


class GroundGeometryError(ValueError):
    """A camera and pose that cannot see the ground; the message says why."""


@dataclass
class GroundProjector:
    """Per-pixel ground points of one camera, plus cached cell-to-pixel maps per grid.

    ``points`` (H,W,3) float32 in the ground frame, NaN where invalid; ``valid`` (H,W) bool; ``first_row`` the
    topmost image row with a valid pixel (rows above it never see the ground, so per-frame work can skip them).
    """

    camera: CameraModel
    pose: CameraPose
    max_range: float
    points: np.ndarray = field(init=False)
    valid: np.ndarray = field(init=False)
    first_row: int = field(init=False)
    _cell_pixels: dict[Hashable, np.ndarray] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.pose.position[2] <= 0.0:
            raise GroundGeometryError(f"the camera is {self.pose.position[2]:.3f} m above the ground plane: it must "
                                      "be above it (check the pose's z and the ground frame)")
        width, height = self.camera.size
        v, u = np.mgrid[0:height, 0:width]
        self.points = self.pixels_to_ground(u.ravel(), v.ravel()).reshape(height, width, 3).astype(np.float32)
        self.valid = ~np.isnan(self.points[..., 0])
        self.first_row = int(np.argmax(self.valid.any(axis=1)))
        if not self.valid.any():
            raise GroundGeometryError(
                f"no pixel sees the ground within {self.max_range:g} m (camera at height "
                f"{self.pose.position[2]:.2f} m, optical axis {np.round(self.pose.rotation[:, 2], 3).tolist()} in the "
                "ground frame): the pose points the camera away from the road; check roll/pitch/yaw and the frames")

    def pixels_to_ground(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Pixel coordinates (N,) each (sub-pixel allowed) -> ground points (N,3) float64, NaN where invalid."""
        normalized = self.camera.normalized(u, v)
        rays = np.concatenate([normalized, np.ones((len(normalized), 1))], axis=1) @ self.pose.rotation.T
        down = rays[:, 2] < -MIN_DOWNWARD * np.linalg.norm(rays, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = np.where(down, -self.pose.position[2] / rays[:, 2], np.nan)
        points = self.pose.position + distance[:, None] * rays
        offset = points[:, :2] - self.pose.position[:2]
        beyond = np.hypot(offset[:, 0], offset[:, 1]) > self.max_range
        points[~down | beyond] = np.nan
        points[:, 2] = np.where(np.isnan(points[:, 0]), np.nan, 0.0)
        return points

    def ground_to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Ground-plane points (N,2) -> flat index (N,) int64 of the pixel that sees each (row * W + col), -1 if none.

        A point is seen when it is in front of the camera, projects inside the image onto a valid pixel, lies within
        ``max_range`` and the projection does not come from distortion folding over.
        """
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        ground = np.concatenate([xy, np.zeros((len(xy), 1))], axis=1)
        optical = self.pose.to_optical(ground)
        width, height = self.camera.size
        index = np.full(len(xy), -1, np.int64)
        in_front = optical[:, 2] > 1e-6
        if self.camera.distorted:
            # Only points within the field of view can be projected meaningfully; the round trip below settles the rest.
            in_front &= np.abs(optical[:, 0]) < 10 * optical[:, 2]
        candidates = np.flatnonzero(in_front)
        if candidates.size == 0:
            return index
        uv = self.camera.project(optical[candidates])
        col = np.rint(uv[:, 0])
        row = np.rint(uv[:, 1])
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        if self.camera.distorted:
            back = self.camera.normalized(uv[:, 0], uv[:, 1])
            expected = optical[candidates, :2] / optical[candidates, 2:3]
            inside &= np.all(np.abs(back - expected) < ROUND_TRIP_TOLERANCE * (1 + np.abs(expected)), axis=1)
        candidates, col, row = candidates[inside], col[inside].astype(np.int64), row[inside].astype(np.int64)
        flat = row * width + col
        offset = xy[candidates] - self.pose.position[:2]
        seen = self.valid.ravel()[flat] & (np.hypot(offset[:, 0], offset[:, 1]) <= self.max_range)
        index[candidates[seen]] = flat[seen]
        return index

    def cell_pixels(self, key: Hashable, centres: Callable[[], np.ndarray]) -> np.ndarray:
        """``ground_to_pixels(centres())`` computed once per ``key`` (a grid's identity) and reused."""
        if key not in self._cell_pixels:
            self._cell_pixels[key] = self.ground_to_pixels(centres())
        return self._cell_pixels[key]


class ProjectorCache:
    """The projectors of the last few (camera model, pose, range) keys; building one costs a full-image undistort."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, GroundProjector] = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], GroundProjector]) -> GroundProjector:
        """The projector for ``key``, built by ``build()`` the first time (errors propagate and are not cached)."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        projector = build()
        self._entries[key] = projector
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return projector
