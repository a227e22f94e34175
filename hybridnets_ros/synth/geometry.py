"""Camera and road geometry of the synthetic driving scenes.

Coordinates: the camera sits at height ``height`` above the road under it, looking along the road. A point is given
by its depth ``z`` (metres ahead, along the road), its lateral offset ``x`` from the road centre line at that depth
(metres, right positive) and its height ``y`` above the road surface at that depth. The road bends and climbs with
depth, so ``RoadProfile`` turns (x, y, z) into camera coordinates and ``Camera`` projects them to pixels.

The road's horizontal and vertical curvatures are sums of sinusoids of the distance along the road, integrated in
closed form, so a moving camera (a "drive") sees one consistent road: the same profile from a later start distance.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Pinhole camera; pitch is folded into ``horizon`` (the image row of a flat road's vanishing line)."""

    width: int
    height_px: int
    focal: float  # px, square pixels
    cx: float  # px, column of the optical axis
    horizon: float  # px, row where the flat ground plane vanishes
    height: float  # m, camera height above the road

    def project(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Camera-frame metres (x right, y up from the road under the camera, z ahead > 0) -> pixel (u, v)."""
        inv_z = 1.0 / z
        return self.cx + self.focal * x * inv_z, self.horizon + self.focal * (self.height - y) * inv_z

    def ground_depth_at_row(self, row: float) -> float:
        """Depth (m) where the flat road meets image row ``row`` (below the horizon)."""
        return self.focal * self.height / max(row - self.horizon, 1e-3)


@dataclass(frozen=True)
class RoadProfile:
    """Horizontal and vertical curvature along the road, each sum_k a_k sin(w_k s + p_k) [1/m] of the distance s."""

    curv_amp: np.ndarray  # (K,)
    curv_freq: np.ndarray  # (K,) rad/m
    curv_phase: np.ndarray  # (K,)
    vcurv_amp: np.ndarray  # (K,) 1/m; positive bends the road upwards (a dip), negative over a crest
    vcurv_freq: np.ndarray  # (K,)
    vcurv_phase: np.ndarray  # (K,)

    @staticmethod
    def _relative_integral(amp: np.ndarray, freq: np.ndarray, phase: np.ndarray, s0: float,
                           z: np.ndarray) -> np.ndarray:
        """Double integral of a curvature sum a sin(w s + p) over [s0, s0+z] minus the tangent at s0: (...) -> (...)."""
        z = np.asarray(z, dtype=np.float64)[..., None]
        at_s0 = freq * s0 + phase
        first = -amp / freq * np.cos(at_s0)  # heading (or grade) at s0, which the camera is aligned with
        value = -amp / freq**2 * (np.sin(freq * z + at_s0) - np.sin(at_s0)) - z * first
        return value.sum(axis=-1)

    def lateral(self, z: np.ndarray, s0: float) -> np.ndarray:
        """Lateral offset (m) of the road centre at depth z, seen from a camera tangent to the road at s0."""
        return self._relative_integral(self.curv_amp, self.curv_freq, self.curv_phase, s0, z)

    def elevation(self, z: np.ndarray, s0: float) -> np.ndarray:
        """Road height (m) at depth z relative to the plane tangent to the road under the camera at s0."""
        return self._relative_integral(self.vcurv_amp, self.vcurv_freq, self.vcurv_phase, s0, z)

    @classmethod
    def sample(cls, rng: np.random.Generator, curviness: float, hilliness: float) -> RoadProfile:
        """Random profile; ``curviness``/``hilliness`` in [0, 1] scale the peak horizontal/vertical curvature."""
        k = 2
        curv_amp = rng.uniform(0.3, 1.0, k) * curviness / 180.0 * rng.choice([-1.0, 1.0], k)
        vcurv_amp = rng.uniform(0.3, 1.0, k) * hilliness / 1800.0 * rng.choice([-1.0, 1.0], k)
        return cls(
            curv_amp=curv_amp,
            curv_freq=2 * np.pi / rng.uniform(250.0, 900.0, k),
            curv_phase=rng.uniform(0, 2 * np.pi, k),
            vcurv_amp=vcurv_amp,
            vcurv_freq=2 * np.pi / rng.uniform(300.0, 900.0, k),
            vcurv_phase=rng.uniform(0, 2 * np.pi, k),
        )


@dataclass(frozen=True)
class RoadView:
    """The road as one camera pose sees it: profile, start distance, the camera's offset from the road centre."""

    camera: Camera
    profile: RoadProfile
    s0: float  # m, distance along the road under the camera
    camera_offset: float  # m, camera's lateral position relative to the road centre (right positive)

    def to_camera(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Road-frame (x from centre line, y above surface, z depth) -> camera-frame metres, same shapes."""
        z = np.asarray(z, dtype=np.float64)
        x_cam = self.profile.lateral(z, self.s0) + np.asarray(x) - self.camera_offset
        y_cam = self.profile.elevation(z, self.s0) + np.asarray(y)
        return x_cam, y_cam, z

    def project(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Road-frame metres -> pixels, shape (..., 2) as (u, v)."""
        u, v = self.camera.project(*self.to_camera(x, y, z))
        return np.stack(np.broadcast_arrays(u, v), axis=-1)

    def visible_depth(self, z_near: float, z_far: float, samples: int = 256) -> float:
        """Farthest depth whose road surface is not hidden behind a crest (the road row must keep rising)."""
        z = np.geomspace(z_near, z_far, samples)
        rows = self.project(np.zeros_like(z), np.zeros_like(z), z)[:, 1]
        rising = np.diff(rows) < 0
        if rising.all():
            return z_far
        return float(z[int(np.argmin(rising))])
