"""Synthetic scenes with a real camera pose and their ground truth in metres, for the node's ground-plane outputs.

The renderer draws a level camera (its pitch folded into the horizon row). A camera that is really pitched and
rolled about its optical centre sees the same rays, only on a rotated image plane, so its image is an exact
homography of a level rendering: ``K R^T R0 K_level^-1``. The level rendering gets a margin wide enough that the
rotated view never samples outside it. Default scenes (``generate_scene``) are unchanged; this module only adds.

Frames (REP 103): ``base_footprint`` is the road point under the camera, x forward along the road's tangent there,
y left, z up. The camera body sits at ``[0, 0, camera height]`` with the sampled roll and pitch (yaw 0).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from hybridnets_ros.synth.geometry import Camera, RoadProfile
from hybridnets_ros.synth.render import MAX_LANE_DEPTH, MAX_ROAD_DEPTH, Scene, render
from hybridnets_ros.synth.vehicles import NEAR_WHEEL_DEPTH
from hybridnets_ros.synth.world import World, sample_world

# Columns: the optical frame's axes (x right, y down, z forward) in a REP 103 body frame (x forward, y left, z up).
_OPTICAL_IN_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
TRUTH_SPACING = 0.5  # m between ground-truth curve samples


@dataclass(frozen=True)
class GroundTruth:
    """What the camera sees, in metres in ``base_footprint`` (arrays of (x, y, z) rows, x ascending; z is the road's
    height, 0 on a flat road).

    ``camera_info``: sensor_msgs/CameraInfo fields (width, height, distortion_model, d, k, r, p).
    ``camera_pose``: [x, y, z, roll, pitch, yaw] of the camera body frame. ``lane_lines``: centre line of each
    painted line (dashed lines as their full curve), left to right. ``road_edges``: (left, right) edges of the
    asphalt. ``vehicles``: (N, 3) ground contact points (under the middle of each vehicle's visible near wheels,
    the lowest point of its box) of the vehicles in ``vehicle_ids`` (the scene's ``ids``, same order).
    ``visible_depth``: farthest road depth drawn (m).
    """

    camera_info: dict
    camera_pose: list[float]
    lane_lines: list[np.ndarray]
    road_edges: tuple[np.ndarray, np.ndarray]
    vehicles: np.ndarray
    vehicle_ids: np.ndarray
    visible_depth: float

    def to_json(self) -> dict:
        """Plain lists and numbers (for a json file beside the image)."""
        return {
            "camera_info": self.camera_info,
            "camera_pose": self.camera_pose,
            "frame_id": "base_footprint",
            "lane_lines": [line.tolist() for line in self.lane_lines],
            "road_edges": [edge.tolist() for edge in self.road_edges],
            "vehicles": [{"id": int(i), "contact": p.tolist()} for i, p in zip(self.vehicle_ids, self.vehicles)],
            "visible_depth": self.visible_depth,
        }


def _rotation(roll: float, pitch: float) -> np.ndarray:
    """Body rotation Ry(pitch) Rx(roll) (REP 103; positive pitch looks down)."""
    cr, sr, cp, sp = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch)
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return ry @ rx


def _intrinsics(camera: Camera) -> np.ndarray:
    return np.array([[camera.focal, 0.0, camera.cx], [0.0, camera.focal, camera.horizon], [0.0, 0.0, 1.0]])


def camera_info(camera: Camera) -> dict:
    """sensor_msgs/CameraInfo fields (width, height, distortion_model, d, k, r, p) of a rendering camera: a
    distortion-free pinhole whose principal point is (cx, horizon), so with its pitch folded into the horizon row the
    camera body is level (pose ``[0, 0, camera.height, 0, 0, 0]`` over a flat road)."""
    k = _intrinsics(camera)
    return {
        "width": camera.width, "height": camera.height_px, "distortion_model": "plumb_bob", "d": [0.0] * 5,
        "k": k.ravel().tolist(), "r": np.eye(3).ravel().tolist(),
        "p": np.concatenate([k, np.zeros((3, 1))], axis=1).ravel().tolist(),
    }


def flatten(world: World) -> World:
    """The same world on a road without hills (curves kept), so the ground plane is exact."""
    profile = world.profile
    flat = RoadProfile(profile.curv_amp, profile.curv_freq, profile.curv_phase, np.zeros_like(profile.vcurv_amp),
                       profile.vcurv_freq, profile.vcurv_phase)
    return dataclasses.replace(world, profile=flat)


def _margin(camera: Camera, roll: float, pitch: float) -> int:
    """Pixels a rotated view can reach beyond the level image's border."""
    half_diagonal = np.hypot(camera.width, camera.height_px) / 2
    return int(np.ceil(camera.focal * np.tan(abs(pitch)) + half_diagonal * np.sin(abs(roll)))) + 4


def _warp_boxes(boxes: np.ndarray, homography: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Axis-aligned boxes around the warped corners of (N,4) boxes, clipped to the image."""
    if len(boxes) == 0:
        return boxes
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x1, y2], 1), np.stack([x2, y2], 1)],
                       axis=1).reshape(-1, 1, 2)
    warped = cv2.perspectiveTransform(corners.astype(np.float64), homography).reshape(-1, 4, 2)
    width, height = size
    out = np.concatenate([warped.min(axis=1), warped.max(axis=1)], axis=1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out.astype(np.float32)


def render_posed(world: World, roll: float = 0.0, pitch: float = 0.0,
                 noise_rng: np.random.Generator | None = None) -> tuple[Scene, GroundTruth]:
    """Render ``world`` at t = 0 from its camera rotated by ``roll`` and ``pitch`` (rad) about its optical centre.

    The image keeps the world camera's size and intrinsics. Zero angles render exactly as ``render(world, 0.0,
    noise_rng)`` does (``noise_rng`` drives the sensor noise; default a fixed one).
    """
    camera = world.camera
    margin = _margin(camera, roll, pitch) if roll or pitch else 0
    big = dataclasses.replace(camera, width=camera.width + 2 * margin, height_px=camera.height_px + 2 * margin,
                              cx=camera.cx + margin, horizon=camera.horizon + margin)
    noise_rng = noise_rng if noise_rng is not None else np.random.default_rng(0)
    level = render(dataclasses.replace(world, camera=big), 0.0, noise_rng)
    size = (camera.width, camera.height_px)
    rotation = _rotation(roll, pitch) @ _OPTICAL_IN_BODY
    homography = _intrinsics(camera) @ rotation.T @ _OPTICAL_IN_BODY @ np.linalg.inv(_intrinsics(big))
    if margin:
        warp = lambda img, interp: cv2.warpPerspective(img, homography, size, flags=interp)  # noqa: E731
        scene = Scene(warp(level.image_bgr, cv2.INTER_LINEAR), _warp_boxes(level.boxes, homography, size),
                      level.categories, level.ids, warp(level.drivable_mask, cv2.INTER_NEAREST),
                      warp(level.lane_mask, cv2.INTER_NEAREST))
    else:
        scene = level
    return scene, _ground_truth(world, roll, pitch, scene)


def _ground_truth(world: World, roll: float, pitch: float, scene: Scene) -> GroundTruth:
    camera = world.camera
    view, placed = world.pose(0.0)
    z_near = max(0.5, 0.6 * camera.ground_depth_at_row(camera.height_px))
    z_vis = view.visible_depth(z_near, MAX_ROAD_DEPTH)

    def ground(depth: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Road-frame (depth, lateral offset from the centre line) (N,) each -> base_footprint (N, 3)."""
        y = -(view.profile.lateral(depth, view.s0) + offset - view.camera_offset)
        return np.stack([depth, y, view.profile.elevation(depth, view.s0)], axis=1)

    def curve(offset: float, z_far: float) -> np.ndarray:
        z = np.arange(np.ceil(z_near / TRUTH_SPACING) * TRUTH_SPACING, z_far, TRUTH_SPACING)
        return ground(z, np.full_like(z, offset))

    layout = world.layout
    lines = sorted((curve(line.offset, min(z_vis, MAX_LANE_DEPTH)) for line in layout.lines),
                   key=lambda c: -c[0, 1])
    edges = (curve(-layout.half_width, z_vis), curve(layout.half_width, z_vis))
    by_uid = {vehicle.uid: (vehicle, z) for vehicle, z in placed}
    placed_ids = [by_uid[uid] for uid in scene.ids.tolist()]
    contact_depth = np.array([z + NEAR_WHEEL_DEPTH for _, z in placed_ids])
    contact_offset = np.array([layout.lane_center(vehicle.lane) + vehicle.lateral for vehicle, _ in placed_ids])
    return GroundTruth(camera_info=camera_info(camera),
                       camera_pose=[0.0, 0.0, float(camera.height), float(roll), float(pitch), 0.0],
                       lane_lines=lines, road_edges=edges,
                       vehicles=ground(contact_depth, contact_offset).reshape(-1, 3),
                       vehicle_ids=scene.ids.copy(), visible_depth=float(z_vis))


def generate_ground_scene(seed: int | np.random.SeedSequence, size: tuple[int, int] = (1280, 720), roll: float = 0.0,
                          pitch: float = 0.0, flat: bool = True) -> tuple[Scene, GroundTruth]:
    """A random still scene (the world of ``generate_scene(seed, size)``, flattened when ``flat``) seen from a
    camera rolled and pitched by ``roll``/``pitch`` rad, with its ground truth in metres."""
    width, height = size
    world = sample_world(np.random.default_rng(seed), int(width), int(height))
    return render_posed(flatten(world) if flat else world, roll, pitch)
