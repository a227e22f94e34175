"""hybridnets-synth --ground-truth / --max-roll-deg / --max-pitch-deg: per-scene CameraInfo, camera pose and ground
truth in metres beside the images, and default scenes unchanged by the option."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hybridnets_ros.ground.pose import pose_from_body
from hybridnets_ros.synth.cli import main
from hybridnets_ros.synth.dataset import synth_sample, synth_sample_with_truth

SIZES = [((640, 360), 1.0)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth_ground") / "data"
    args = ["--output", str(root), "--num-train", "3", "--num-val", "1", "--seed", "5", "--sizes", "640x360",
            "--workers", "1", "--ground-truth", "--max-roll-deg", "3", "--max-pitch-deg", "2"]
    assert main(args) == 0
    return root


def test_zero_angles_give_exactly_the_default_scene() -> None:
    _, plain = synth_sample(7, "train", 2, SIZES)
    _, posed, truth = synth_sample_with_truth(7, "train", 2, SIZES)
    np.testing.assert_array_equal(plain.image_bgr, posed.image_bgr)
    np.testing.assert_array_equal(plain.lane_mask, posed.lane_mask)
    np.testing.assert_array_equal(plain.boxes, posed.boxes)
    assert truth.camera_pose[3:] == [0.0, 0.0, 0.0]


def test_every_image_has_its_ground_truth_with_a_turned_camera(dataset: Path) -> None:
    rolls = []
    for split, count in (("train", 3), ("val", 1)):
        names = sorted(p.stem for p in (dataset / "images" / split).iterdir())
        truths = sorted(p.stem for p in (dataset / "ground_truth" / split).iterdir())
        assert names == truths and len(names) == count
        for name in names:
            truth = json.loads((dataset / "ground_truth" / split / f"{name}.json").read_text())
            assert truth["frame_id"] == "base_footprint"
            assert (truth["camera_info"]["width"], truth["camera_info"]["height"]) == (640, 360)
            x, y, z, roll, pitch, yaw = truth["camera_pose"]
            assert abs(roll) <= np.deg2rad(3) and abs(pitch) <= np.deg2rad(2) and yaw == 0.0 and z > 1.0
            rolls.append(roll)
            assert truth["lane_lines"] and len(truth["road_edges"]) == 2
    assert len(set(rolls)) == len(rolls), "each scene draws its own roll"


def test_true_lane_lines_project_onto_the_lane_mask(dataset: Path) -> None:
    on_mask = []
    for path in sorted((dataset / "ground_truth" / "train").iterdir()):
        truth = json.loads(path.read_text())
        mask = cv2.imread(str(dataset / "ll_seg_annotations" / "train" / f"{path.stem}.png"), cv2.IMREAD_UNCHANGED)
        # A thicker mask: the label band is centred on the line but a point may sit on its edge.
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8)) > 0
        pose = pose_from_body(truth["camera_pose"])
        k = np.reshape(truth["camera_info"]["k"], (3, 3))
        for line in truth["lane_lines"]:
            points = np.array(line)
            points = points[(points[:, 0] > 4.0) & (points[:, 0] < 25.0)]
            optical = pose.to_optical(points)
            uv = (optical @ k.T)[:, :2] / optical[:, 2:3]
            col, row = np.rint(uv).astype(int).T
            inside = (col >= 0) & (col < 640) & (row >= 0) & (row < 360)
            on_mask.extend(mask[row[inside], col[inside]].tolist())
    # Vehicles hide some of the lines (the mask is cleared there); the rest lies on the painted label.
    assert len(on_mask) > 50 and np.mean(on_mask) > 0.8
