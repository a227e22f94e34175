"""Synthetic scenes from a pitched and rolled camera, with ground truth in metres; the ground geometry fed with the
scenes' exact masks and boxes (no network) must land on that truth to within pixel quantisation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from hybridnets_ros.ground.camera import camera_model
from hybridnets_ros.ground.contacts import ground_contacts
from hybridnets_ros.ground.grid import FREE, UNKNOWN, GridSpec, occupancy
from hybridnets_ros.ground.lanes import LaneSpec, lane_polylines
from hybridnets_ros.ground.pose import pose_from_body
from hybridnets_ros.ground.projector import GroundProjector
from hybridnets_ros.synth.scene import generate_scene
from hybridnets_ros.synth.ground import generate_ground_scene, render_posed
from hybridnets_ros.synth.render import render
from hybridnets_ros.synth.world import sample_world

SIZE = (1280, 720)
POSES = {"level": (0.0, 0.0), "rolled_pitched": (np.deg2rad(2.0), np.deg2rad(3.0))}


def _projector(truth) -> GroundProjector:
    info = truth.camera_info
    model, _ = camera_model(k=np.array(info["k"]), d=np.array(info["d"]), distortion_model=info["distortion_model"],
                            calib_size=(info["width"], info["height"]), image_size=SIZE)
    return GroundProjector(model, pose_from_body(truth.camera_pose), max_range=50.0)


def _truth_y(truth_lines, x: float) -> np.ndarray:
    return np.array([np.interp(x, line[:, 0], line[:, 1], left=np.nan, right=np.nan) for line in truth_lines])


@pytest.fixture(scope="module", params=sorted(POSES))
def posed(request):
    roll, pitch = POSES[request.param]
    return [generate_ground_scene(seed, SIZE, roll=roll, pitch=pitch) for seed in (3, 4, 5)]


def test_zero_angles_render_exactly_the_level_scene() -> None:
    world = sample_world(np.random.default_rng(11), *SIZE)
    posed, _ = render_posed(world)
    level = render(world, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(posed.image_bgr, level.image_bgr)
    np.testing.assert_array_equal(posed.boxes, level.boxes)


def test_default_scenes_are_unchanged_by_the_ground_truth_module() -> None:
    # generate_scene draws the same world; its level camera is the exported camera with zero angles.
    scene = generate_scene(3, SIZE)
    _, truth = generate_ground_scene(3, SIZE, flat=False)
    assert truth.camera_pose[3:] == [0.0, 0.0, 0.0]
    assert scene.image_bgr.shape == (SIZE[1], SIZE[0], 3)
    assert truth.camera_info["k"][2] != 0 and truth.camera_info["width"] == SIZE[0]


def test_drivable_mask_is_the_true_road_seen_through_the_exported_camera(posed) -> None:
    for scene, truth in posed:
        info = truth.camera_info
        pose = pose_from_body(truth.camera_pose)
        left, right = truth.road_edges
        ground = np.concatenate([left, right[::-1]])  # (x, y, z) rows around the road
        rvec, _ = cv2.Rodrigues(pose.rotation.T)
        uv, _ = cv2.projectPoints(ground, rvec, -pose.rotation.T @ pose.position, np.reshape(info["k"], (3, 3)),
                                  None)
        road = np.zeros(scene.drivable_mask.shape, np.uint8)
        cv2.fillPoly(road, [np.rint(uv.reshape(-1, 2) * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
        drivable = scene.drivable_mask > 0
        # Vehicles cover part of the road in the mask; compare where the road is not hidden.
        hidden = np.zeros_like(drivable)
        for x1, y1, x2, y2 in np.rint(scene.boxes).astype(int):
            hidden[y1:y2, x1:x2] = True
        road = road.astype(bool) & ~hidden
        iou = (drivable & road).sum() / (drivable | road).sum()
        assert iou > 0.97


def test_lane_polylines_from_true_masks_lie_on_the_true_lines(posed) -> None:
    errors: dict[float, list[float]] = {10.0: [], 30.0: []}
    for scene, truth in posed:
        projector = _projector(truth)
        lane = (scene.lane_mask > 0) & projector.valid
        lines = lane_polylines(projector.points[lane], np.ones(lane.sum()), LaneSpec(0.0, 50.0, -15.0, 15.0))
        for at, found in errors.items():
            truth_y = _truth_y(truth.lane_lines, at)
            for line in lines:
                near = np.abs(line.points[:, 0] - at) <= 0.25
                if near.any():
                    found.append(float(np.nanmin(np.abs(truth_y - line.points[near][0, 1]))))
    # The label bands are 4 px or more wide, so single points scatter by up to ~0.15 m at 30 m; the fitted lines
    # must sit on the truth (median), and even the end of a line cut short by a vehicle stays near it (max).
    assert len(errors[10.0]) >= 6 and len(errors[30.0]) >= 3, errors
    assert np.median(errors[10.0]) < 0.05 and np.median(errors[30.0]) < 0.12, errors
    assert max(errors[10.0] + errors[30.0]) < 0.3, errors


def test_grid_from_the_true_mask_matches_the_true_road(posed) -> None:
    for scene, truth in posed:
        projector = _projector(truth)
        spec = GridSpec(0.1, 0.0, 50.0, -15.0, 15.0)
        mask = (scene.drivable_mask > 0).astype(np.uint8)
        grid = occupancy(projector, spec, mask, (1,), scene.boxes)
        centres = spec.centres().reshape(*spec.shape, 2)
        left = np.interp(centres[..., 0], truth.road_edges[0][:, 0], truth.road_edges[0][:, 1])
        right = np.interp(centres[..., 0], truth.road_edges[1][:, 0], truth.road_edges[1][:, 1])
        road = (centres[..., 1] < left) & (centres[..., 1] > right)
        seen = grid != UNKNOWN
        free = grid == FREE
        iou = (free & road & seen).sum() / ((free | road) & seen).sum()
        assert iou > 0.95


def test_vehicle_contacts_from_true_boxes_are_the_true_positions() -> None:
    for seed in (3, 5, 8):
        scene, truth = generate_ground_scene(seed, SIZE)
        contacts = ground_contacts(_projector(truth), scene.boxes)
        near = contacts.valid & (truth.vehicles[:, 0] < 45.0)
        assert near.any()
        distance = np.hypot(*contacts.points[near, :2].T)
        true_distance = np.hypot(*truth.vehicles[near, :2].T)
        assert np.abs(distance / true_distance - 1).max() < 0.02  # about a pixel row at 16 m
