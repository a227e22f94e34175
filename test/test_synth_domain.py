"""Scene domains: the default (source) scenes untouched, and the target domain shifted in the documented ways (darker,
lower contrast, fog that grows with depth, a higher and wider camera, amber markings) with labels still exact."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hybridnets_ros.synth.cli import main
from hybridnets_ros.synth.dataset import synth_sample, synth_sample_with_truth
from hybridnets_ros.synth.domain import SOURCE, TARGET, shift_world
from hybridnets_ros.synth.render import render
from hybridnets_ros.synth.scene import generate_drive, generate_scene
from hybridnets_ros.synth.world import sample_world

SIZE = (640, 360)
SEEDS = range(20, 30)


@pytest.fixture(scope="module")
def pairs():
    """(source, target) scenes of the same seeds."""
    return [(generate_scene(seed, SIZE), generate_scene(seed, SIZE, TARGET)) for seed in SEEDS]


def _same_scene(a, b) -> bool:
    return all(x.tobytes() == y.tobytes() for x, y in ((a.image_bgr, b.image_bgr), (a.lane_mask, b.lane_mask),
                                                     (a.drivable_mask, b.drivable_mask), (a.boxes, b.boxes)))


def test_source_domain_is_the_default_scene() -> None:
    assert _same_scene(generate_scene(5, SIZE), generate_scene(5, SIZE, SOURCE))
    plain = list(generate_drive(3, 3, SIZE))
    assert all(_same_scene(a, b) for a, b in zip(plain, generate_drive(3, 3, SIZE, domain=SOURCE)))
    world = sample_world(np.random.default_rng(1), *SIZE)
    assert shift_world(world, np.random.default_rng(2), SOURCE) is world


def test_target_is_deterministic_and_differs_from_source(pairs) -> None:
    assert _same_scene(generate_scene(20, SIZE, TARGET), pairs[0][1])
    assert not any(_same_scene(source, target) for source, target in pairs)


def test_target_is_darker_with_less_contrast(pairs) -> None:
    def luma(scene) -> np.ndarray:
        return cv2.cvtColor(scene.image_bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)

    for source, target in pairs:
        assert luma(target).mean() < 0.75 * luma(source).mean()
    assert np.mean([luma(t).mean() for _, t in pairs]) < 0.55 * np.mean([luma(s).mean() for s, _ in pairs])
    source_std = np.mean([luma(s).std() for s, _ in pairs])
    target_std = np.mean([luma(t).std() for _, t in pairs])
    assert target_std < 0.5 * source_std


def test_target_markings_are_amber(pairs) -> None:
    """Under the lane labels the target paint is red+green over blue (amber) in every scene, dark as it is; source
    markings are mostly white."""
    def warmth(scene) -> float:
        paint = scene.image_bgr[scene.lane_mask > 0].astype(np.float64)
        warm = (paint[:, 1] + paint[:, 2]) / 2
        return float(((warm - paint[:, 0]) / (warm + paint[:, 0] + 1.0)).mean())

    target = [warmth(t) for _, t in pairs if (t.lane_mask > 0).any()]
    assert len(target) >= 8 and min(target) > 0.2
    assert np.mean(target) > np.mean([warmth(s) for s, _ in pairs if (s.lane_mask > 0).any()]) + 0.15


def test_fog_reduces_contrast_more_with_depth() -> None:
    """The same foggy world rendered with and without its fog: the lane-to-road contrast keeps more of itself near
    the camera than far away."""
    for seed in range(40, 80):
        rng = np.random.default_rng(seed)
        world = shift_world(sample_world(rng, *SIZE), rng, TARGET)
        if world.style.fog_density > 0.02:
            break
    else:
        pytest.fail("no dense fog among the target scenes of seeds 40..79")
    clear = dataclasses.replace(world, style=dataclasses.replace(world.style, fog_density=0.0))
    foggy_scene, clear_scene = render(world, 0.0, np.random.default_rng(0)), render(clear, 0.0, np.random.default_rng(0))
    camera = world.camera
    rows = np.arange(SIZE[1]) + 0.5
    depth = np.where(rows > camera.horizon, camera.focal * camera.height / np.maximum(rows - camera.horizon, 1e-3),
                     np.inf)

    def contrast(scene, near: float, far: float) -> float:
        band = np.zeros(scene.lane_mask.shape, bool)
        band[(depth >= near) & (depth < far)] = True
        gray = cv2.cvtColor(scene.image_bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)
        lane, road = band & (scene.lane_mask > 0), band & (scene.drivable_mask > 0) & (scene.lane_mask == 0)
        assert lane.sum() > 20 and road.sum() > 20
        return abs(gray[lane].mean() - gray[road].mean())

    near_kept = contrast(foggy_scene, 4.0, 15.0) / contrast(clear_scene, 4.0, 15.0)
    far_kept = contrast(foggy_scene, 30.0, 80.0) / contrast(clear_scene, 30.0, 80.0)
    assert far_kept < 0.8 * near_kept


def test_photometry_leaves_labels_exact() -> None:
    """Night light, fog, contrast and lamps change pixel values only: the labels equal those of the same shifted
    world drawn with the plain photometry, and they follow the shifted camera."""
    for seed in range(4):
        rng = np.random.default_rng(seed)
        source = sample_world(rng, *SIZE)
        world = shift_world(source, rng, TARGET)
        plain = dataclasses.replace(world, style=dataclasses.replace(world.style, fog_density=0.0, contrast=1.0,
                                                                     vehicle_lights=False))
        shifted, reference = render(world, 0.0, np.random.default_rng(0)), render(plain, 0.0, np.random.default_rng(0))
        np.testing.assert_array_equal(shifted.drivable_mask, reference.drivable_mask)
        np.testing.assert_array_equal(shifted.lane_mask, reference.lane_mask)
        np.testing.assert_array_equal(shifted.boxes, reference.boxes)
        w, h = SIZE
        assert (shifted.drivable_mask[h - 4:, w // 2 - 2: w // 2 + 2] == 255).all()
        original = render(source, 0.0, np.random.default_rng(0))
        assert not np.array_equal(original.drivable_mask, shifted.drivable_mask)


def test_target_camera_is_higher_and_wider_in_the_ground_truth() -> None:
    sizes = [(SIZE, 1.0)]
    for index in range(4):
        _, _, source = synth_sample_with_truth(9, "train", index, sizes)
        _, _, target = synth_sample_with_truth(9, "train", index, sizes, domain=TARGET)
        assert SOURCE.camera_height[0] <= source.camera_pose[2] <= SOURCE.camera_height[1]
        assert TARGET.camera_height[0] <= target.camera_pose[2] <= TARGET.camera_height[1]
        for truth, domain in ((source, SOURCE), (target, TARGET)):
            focal = truth.camera_info["k"][0]
            hfov = np.rad2deg(2 * np.arctan(SIZE[0] / 2 / focal))
            assert domain.hfov_deg[0] - 1e-6 <= hfov <= domain.hfov_deg[1] + 1e-6


def test_cli_writes_the_target_domain(tmp_path: Path) -> None:
    root = tmp_path / "target"
    assert main(["--output", str(root), "--num-train", "1", "--num-val", "2", "--seed", "3", "--sizes", "640x360",
                 "--workers", "1", "--domain", "target"]) == 0
    assert "target domain" in (root / "dataset.yaml").read_text().splitlines()[0]
    name, scene = synth_sample(3, "val", 1, [(SIZE, 1.0)], TARGET)
    lanes = cv2.imread(str(root / "ll_seg_annotations" / "val" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(lanes, scene.lane_mask)
    label = json.loads((root / "det_annotations" / "val" / f"{name}.json").read_text())
    boxes = [[o["box2d"][k] for k in ("x1", "y1", "x2", "y2")] for o in label["frames"][0]["objects"]]
    assert np.allclose(np.array(boxes).reshape(-1, 4), scene.boxes)
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path / "x"), "--num-train", "1", "--num-val", "0", "--domain", "dusk"])
