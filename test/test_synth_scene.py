"""Synthetic scene generator: determinism, label consistency, sizes and smooth drives."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from hybridnets_ros.synth.scene import Scene, generate_drive, generate_scene, scene_to_bdd

SIZES = [(1280, 720), (960, 540), (1024, 768), (800, 600), (1242, 375)]
CATEGORIES = {"car", "truck", "bus"}


@pytest.fixture(scope="module")
def scenes() -> list[tuple[int, tuple[int, int], Scene]]:
    """Twenty scenes over all test sizes (seeds 100..119)."""
    sizes = [SIZES[seed % len(SIZES)] for seed in range(100, 120)]
    return [(seed, size, generate_scene(seed, size)) for seed, size in zip(range(100, 120), sizes)]


def _boxes_overlap(boxes: np.ndarray, i: int) -> bool:
    """Whether box i intersects any other box of the scene."""
    b = boxes[i]
    others = np.delete(boxes, i, axis=0)
    inter_w = np.minimum(b[2], others[:, 2]) - np.maximum(b[0], others[:, 0])
    inter_h = np.minimum(b[3], others[:, 3]) - np.maximum(b[1], others[:, 1])
    return bool(np.any((inter_w > 0) & (inter_h > 0)))


def test_same_seed_same_bytes() -> None:
    a, b = generate_scene(7, (960, 540)), generate_scene(7, (960, 540))
    assert a.image_bgr.tobytes() == b.image_bgr.tobytes()
    assert a.drivable_mask.tobytes() == b.drivable_mask.tobytes()
    assert a.lane_mask.tobytes() == b.lane_mask.tobytes()
    assert a.boxes.tobytes() == b.boxes.tobytes() and a.categories == b.categories
    from_rng = generate_scene(np.random.default_rng(7), (960, 540))
    assert from_rng.image_bgr.tobytes() == a.image_bgr.tobytes()


def test_different_seeds_differ() -> None:
    a, b = generate_scene(1, (640, 360)), generate_scene(2, (640, 360))
    assert np.abs(a.image_bgr.astype(int) - b.image_bgr.astype(int)).mean() > 5


def test_shapes_and_binary_masks(scenes) -> None:
    for seed, (w, h), scene in scenes:
        assert scene.image_bgr.shape == (h, w, 3) and scene.image_bgr.dtype == np.uint8, seed
        for mask in (scene.drivable_mask, scene.lane_mask):
            assert mask.shape == (h, w) and mask.dtype == np.uint8, seed
            assert set(np.unique(mask).tolist()) <= {0, 255}, seed
        assert scene.boxes.shape == (len(scene.categories), 4) and scene.boxes.dtype == np.float32, seed
        assert len(scene.ids) == len(scene.categories) == len(set(scene.ids.tolist())), seed


def test_scenes_have_road_lanes_and_vehicles(scenes) -> None:
    for seed, (w, h), scene in scenes:
        da = scene.drivable_mask
        # The camera drives on the road: the bottom centre is road, the top row is sky or scenery.
        assert (da[h - 6:, w // 2 - 3: w // 2 + 3] == 255).all(), seed
        assert da[0].max() == 0, seed
        assert 0.1 < (da > 0).mean() < 0.75, seed
    assert sum((s.lane_mask > 0).any() for _, _, s in scenes) >= 18
    assert sum(len(s.boxes) > 0 for _, _, s in scenes) >= 16
    assert {c for _, _, s in scenes for c in s.categories} == CATEGORIES


def test_boxes_inside_image_and_valid(scenes) -> None:
    for seed, (w, h), scene in scenes:
        assert set(scene.categories) <= CATEGORIES, seed
        b = scene.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all(), seed
        assert (b[:, 2] - b[:, 0] >= 4).all() and (b[:, 3] - b[:, 1] >= 4).all(), seed


def test_vehicles_are_not_drivable_and_stand_on_the_road(scenes) -> None:
    cores = belows = 0
    for seed, (w, h), scene in scenes:
        da = scene.drivable_mask > 0
        for i, (x1, y1, x2, y2) in enumerate(scene.boxes):
            bw, bh = x2 - x1, y2 - y1
            # The middle of a box is that vehicle or one in front of it: never drivable.
            core = da[int(y1 + 0.3 * bh): int(np.ceil(y2 - 0.3 * bh)), int(x1 + 0.3 * bw): int(np.ceil(x2 - 0.3 * bw))]
            assert core.size and core.mean() < 0.05, (seed, i, core.mean())  # road under the sills only
            cores += 1
            # Below a vehicle's lowest point (its shadow, the lane it drives in) is road, unless another hides it.
            band = np.array([x1 + 0.2 * bw, y2, x2 - 0.2 * bw, y2 + max(2.0, 0.08 * bh)])
            others_and_band = np.vstack([np.delete(scene.boxes, i, axis=0), band])
            if band[3] < h and not _boxes_overlap(others_and_band, len(others_and_band) - 1):
                below = da[int(np.ceil(band[1])): int(np.ceil(band[3])), int(band[0]): int(band[2])]
                assert below.size and below.mean() > 0.6, (seed, i, below.mean())
                belows += 1
    assert cores >= 60 and belows >= 20, (cores, belows)


def test_lane_markings_lie_on_the_road(scenes) -> None:
    for seed, (w, h), scene in scenes:
        lanes = scene.lane_mask > 0
        if not lanes.any():
            continue
        da = scene.drivable_mask
        # The label may be wider than the paint at the road's edge lines and far away, never by much.
        near_road = cv2.dilate(da, np.ones((2 * int(4 * w / 1280) + 3,) * 2, np.uint8)) > 0
        assert not (lanes & ~near_road).any(), seed
        assert (lanes & (da > 0)).sum() >= 0.9 * lanes.sum(), seed


def test_lane_labels_are_thick_at_the_bottom(scenes) -> None:
    widths = []
    for seed, (w, h), scene in scenes:
        row = scene.lane_mask[int(0.97 * h)] > 0
        if not row.any():
            continue
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        runs = edges[1::2] - edges[::2]
        widths.append(runs.max() * 1280 / w)
    assert len(widths) >= 10
    assert min(widths) >= 8


def test_several_sizes_scale_the_scene(scenes) -> None:
    for seed, (w, h), scene in scenes:
        if len(scene.boxes):
            heights = scene.boxes[:, 3] - scene.boxes[:, 1]
            assert heights.max() <= h and heights.max() >= 0.02 * h, seed


def test_bdd_json_layout() -> None:
    scene = generate_scene(3, (800, 600))
    label = scene_to_bdd(scene, "synth_x")
    assert label["name"] == "synth_x"
    objects = label["frames"][0]["objects"]
    assert len(objects) == len(scene.boxes)
    for k, obj in enumerate(objects):
        assert obj["id"] == k and obj["category"] in CATEGORIES
        box = obj["box2d"]
        assert [box["x1"], box["y1"], box["x2"], box["y2"]] == pytest.approx(scene.boxes[k].tolist())


def test_drive_is_smooth_and_reproducible() -> None:
    frames = list(generate_drive(5, 12, (640, 360), fps=10.0))
    assert len(frames) == 12
    matched = 0
    for a, b in zip(frames, frames[1:]):
        inter = (a.drivable_mask > 0) & (b.drivable_mask > 0)
        union = (a.drivable_mask > 0) | (b.drivable_mask > 0)
        assert inter.sum() > 0.85 * union.sum()
        boxes_b = dict(zip(b.ids.tolist(), b.boxes))
        for uid, box in zip(a.ids.tolist(), a.boxes):
            if uid in boxes_b:
                matched += 1
                size = max(box[2] - box[0], box[3] - box[1])
                move = np.linalg.norm((box[:2] + box[2:]) / 2 - (boxes_b[uid][:2] + boxes_b[uid][2:]) / 2)
                assert move <= 0.4 * size + 3, (uid, move, size)
        assert np.abs(a.image_bgr.astype(int) - b.image_bgr.astype(int)).mean() > 0.5  # it does move
    assert matched >= 10
    # Frame k does not depend on how long the drive is.
    shorter = list(generate_drive(5, 4, (640, 360), fps=10.0))
    assert shorter[3].image_bgr.tobytes() == frames[3].image_bgr.tobytes()
    assert shorter[3].ids.tolist() == frames[3].ids.tolist()
