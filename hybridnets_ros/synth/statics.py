"""Roadside objects of the synthetic scenes (trees, buildings, poles) as coloured polygons.

They stand beside the road, so they never carry labels; they matter because they can hide parts of the road and of
vehicles on curves, which the renderer accounts for through the same polygons.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridnets_ros.synth.geometry import RoadView
from hybridnets_ros.synth.vehicles import Color, Shading, scale_color

TREE_GREENS: tuple[Color, ...] = ((40, 95, 45), (35, 80, 55), (50, 110, 70), (30, 70, 40), (45, 100, 90))
WALLS: tuple[Color, ...] = ((150, 160, 170), (90, 110, 150), (70, 80, 120), (180, 185, 190), (120, 140, 160),
                            (110, 110, 110), (160, 190, 210))
WINDOW: Color = (85, 70, 60)


@dataclass(frozen=True)
class StaticObject:
    """A roadside object at distance ``s`` along the road and lateral ``x`` (its edge nearest the road)."""

    kind: str  # tree | building | pole
    s: float
    x: float
    width: float  # m across (away from the road)
    height: float
    length: float  # m along the road
    color: Color
    jitter: tuple[float, ...] = ()  # tree crown radius factors

    def sort_depth(self, z_near_face: float) -> float:
        """Painter depth: buildings sort by their far end so cars in front of their facades stay in front."""
        return z_near_face + (self.length if self.kind == "building" else 0.0)


def sample_static(rng: np.random.Generator, kind: str, s: float, x_edge: float, side: float) -> StaticObject:
    """Random object of ``kind`` whose road-facing edge is at ``x_edge`` on ``side`` (-1 left, +1 right)."""
    if kind == "tree":
        radius = rng.uniform(1.5, 3.5)
        return StaticObject("tree", s, side * (x_edge + radius), radius, rng.uniform(4.0, 10.0), radius,
                            TREE_GREENS[int(rng.integers(len(TREE_GREENS)))], tuple(rng.uniform(0.82, 1.1, 14)))
    if kind == "building":
        width = rng.uniform(8.0, 16.0)
        return StaticObject("building", s, side * x_edge, width, rng.uniform(6.0, 24.0), rng.uniform(10.0, 30.0),
                            WALLS[int(rng.integers(len(WALLS)))])
    return StaticObject("pole", s, side * x_edge, 0.25, rng.uniform(6.0, 9.0), 0.25, (120.0, 120.0, 125.0))


def static_polygons(view: RoadView, obj: StaticObject, z: float, shading: Shading) -> list[tuple[np.ndarray, Color]]:
    """Painter-ordered polygons of ``obj`` when its near face is at depth ``z``."""
    if obj.kind == "tree":
        return _tree(view, obj, z)
    side = 1.0 if obj.x > 0 else -1.0
    x_in, x_out = obj.x, obj.x + side * obj.width
    polys: list[tuple[np.ndarray, Color]] = []
    # The facade facing the road, then the near face; the facade is seen when the camera is on its road side.
    facade = view.project(np.array([x_in, x_in, x_in, x_in]), np.array([0, 0, obj.height, obj.height]),
                          np.array([z, z + obj.length, z + obj.length, z]))
    polys.append((facade, scale_color(obj.color, shading.side)))
    if obj.kind == "building":
        polys.append((_window_grid(view, obj, x_in, z), WINDOW))
    near = view.project(np.array([x_in, x_out, x_out, x_in]), np.array([0, 0, obj.height, obj.height]),
                        np.full(4, z))
    polys.append((near, scale_color(obj.color, shading.near)))
    if obj.kind == "pole":
        arm_end = x_in - side * 2.5
        arm = view.project(np.array([x_in, arm_end, arm_end, x_in]),
                           np.array([obj.height - 0.25, obj.height - 0.25, obj.height, obj.height]), np.full(4, z))
        polys.append((arm, scale_color(obj.color, shading.near)))
    return polys


def _window_grid(view: RoadView, obj: StaticObject, x: float, z: float) -> np.ndarray:
    """All facade windows as one polygon set, shape (n, 4, 2) px (3 m floors, 3.5 m bays)."""
    floors = np.arange(1.0, obj.height - 1.5, 3.0)
    bays = np.arange(1.0, obj.length - 1.5, 3.5)
    if floors.size == 0 or bays.size == 0:
        return np.zeros((0, 4, 2))
    fy, bz = np.meshgrid(floors, bays, indexing="ij")
    ys = np.stack([fy, fy, fy + 1.6, fy + 1.6], axis=-1).reshape(-1, 4)
    zs = np.stack([bz, bz + 1.8, bz + 1.8, bz], axis=-1).reshape(-1, 4) + z
    return view.project(np.full_like(ys, x), ys, zs)


def _tree(view: RoadView, obj: StaticObject, z: float) -> list[tuple[np.ndarray, Color]]:
    """Trunk plus a jittered round crown facing the camera."""
    trunk_top = obj.height - obj.width * 0.8
    trunk = view.project(np.array([obj.x - 0.15, obj.x + 0.15, obj.x + 0.15, obj.x - 0.15]),
                         np.array([0.0, 0.0, trunk_top, trunk_top]), np.full(4, z))
    theta = np.linspace(0, 2 * np.pi, len(obj.jitter), endpoint=False)
    radius = obj.width * np.asarray(obj.jitter)
    crown = view.project(obj.x + radius * np.cos(theta), trunk_top + radius * 0.9 * np.sin(theta),
                         np.full_like(theta, z))
    inner = view.project(obj.x - 0.25 * obj.width + 0.55 * radius * np.cos(theta),
                         trunk_top + 0.3 * obj.width + 0.5 * radius * np.sin(theta), np.full_like(theta, z))
    return [(trunk, (40.0, 55.0, 70.0)), (crown, obj.color), (inner, scale_color(obj.color, 1.25))]
