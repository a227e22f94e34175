"""k-means anchors: recovery of known clusters, quality measures, and the hybridnets-anchors CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from hybridnets_ros.inference.letterbox import Letterbox
from hybridnets_ros.model.anchors import generate_anchors
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.training.anchor_fit import (
    AnchorSet,
    anchor_shapes,
    fit_anchors,
    choose_octaves,
    positional_quality,
    shape_iou,
    shape_quality,
)
from hybridnets_ros.training.anchors import main

ANCHOR_SCALE = 1.25
TRUE = AnchorSet(scales=(2**0.1, 2**0.45, 2**0.8), ratios=((0.5, 2.0), (1.0, 1.0), (1.6, 1 / 1.6)))
BAD = AnchorSet(scales=(1.0, 1.1, 1.2), ratios=((0.25, 4.0), (0.3, 3.3), (0.35, 2.9)))


def _cluster_sizes(n: int, levels: int, seed: int, noise: float = 0.05) -> torch.Tensor:
    """(n, 2) box sizes drawn from TRUE's (level, scale, ratio) clusters with log-normal jitter."""
    gen = torch.Generator().manual_seed(seed)
    level = torch.randint(0, levels, (n,), generator=gen)
    scale = torch.tensor(TRUE.scales, dtype=torch.float64)[torch.randint(0, 3, (n,), generator=gen)]
    ratio = torch.tensor(TRUE.ratios, dtype=torch.float64)[torch.randint(0, 3, (n,), generator=gen)]
    base = ANCHOR_SCALE * 8 * 2.0 ** level.double() * scale
    return base[:, None] * ratio * torch.exp(torch.randn(n, 2, generator=gen, dtype=torch.float64) * noise)


def test_shape_iou_hand_value():
    iou = shape_iou(torch.tensor([[10.0, 10.0]]), torch.tensor([[5.0, 20.0], [10.0, 10.0]]))
    assert iou[0, 0].item() == pytest.approx(1 / 3)  # intersection 5x10, union 100 + 100 - 50
    assert iou[0, 1].item() == pytest.approx(1.0)


def test_anchor_shapes_follow_the_model_convention():
    config = ModelConfig(name="t", compound_coef=0, input_size=(256, 512), obj_list=("car",), seg_list=("road",),
                         seg_mode="binary")
    grid = generate_anchors(config, config.input_size).double()
    grid_wh = torch.stack([grid[:, 3] - grid[:, 1], grid[:, 2] - grid[:, 0]], dim=1)
    ours = anchor_shapes(AnchorSet.of(config), config.anchor_scale)
    assert ours.shape == (5 * 9, 2)
    distance = torch.cdist(grid_wh, ours)  # every grid anchor has its shape in ours, and every shape is used
    assert distance.min(dim=1).values.max() < 1e-3
    assert distance.min(dim=0).values.max() < 1e-3


def test_kmeans_recovers_known_clusters_deterministically():
    wh = _cluster_sizes(3000, levels=5, seed=1)
    fitted = fit_anchors(wh, ANCHOR_SCALE, seed=0)
    assert fitted.scales == pytest.approx(TRUE.scales, rel=0.02)
    for got, want in zip(fitted.ratios, TRUE.ratios):
        assert got == pytest.approx(want, rel=0.02)
        assert got[0] * got[1] == pytest.approx(1.0)
    assert fit_anchors(wh, ANCHOR_SCALE, seed=0) == fitted
    # Started from the bad anchors, the result is still the true clusters (the random starts find them).
    assert fit_anchors(wh, ANCHOR_SCALE, seed=3, initial=BAD).scales == pytest.approx(TRUE.scales, rel=0.02)


def test_fitted_anchors_beat_a_bad_set():
    wh = _cluster_sizes(2000, levels=5, seed=2, noise=0.15)
    fitted = fit_anchors(wh, ANCHOR_SCALE, seed=0)
    good, bad = shape_quality(wh, fitted, ANCHOR_SCALE), shape_quality(wh, BAD, ANCHOR_SCALE)
    assert good["bpr_shape"] > 0.95 > bad["bpr_shape"] + 0.3
    assert good["mean_best_iou_shape"] > bad["mean_best_iou_shape"] + 0.2


def test_positional_quality_on_boxes_placed_on_anchors():
    config = ModelConfig(name="t", compound_coef=0, input_size=(256, 512), obj_list=("car",), seg_list=("road",),
                         seg_mode="binary")
    grid = generate_anchors(config, config.input_size)[:: 97]
    inside = (grid[:, 0] >= 0) & (grid[:, 1] >= 0) & (grid[:, 2] <= 256) & (grid[:, 3] <= 512)
    boxes = grid[inside][:, [1, 0, 3, 2]]
    exact = positional_quality(boxes, config, AnchorSet.of(config))
    assert exact["bpr_positional"] == 1.0 and exact["mean_best_iou_positional"] == pytest.approx(1.0)
    assert positional_quality(boxes, config, BAD)["bpr_positional"] < 0.7


def _octave_phase(scales) -> list[float]:
    return sorted(math.log2(s) % 1.0 for s in scales)


def test_choose_octaves_only_doubles_scales_and_never_covers_worse():
    config = ModelConfig(name="t", compound_coef=0, input_size=(256, 512), obj_list=("car",), seg_list=("road",),
                         seg_mode="binary")
    wh = _cluster_sizes(400, levels=3, seed=7).to(torch.float32)
    xy = torch.rand(400, 2, generator=torch.Generator().manual_seed(8)) * (torch.tensor([512.0, 256.0]) - wh)
    boxes = torch.cat([xy, xy + wh], dim=1)
    chosen = choose_octaves(TRUE, boxes, config)
    assert chosen.ratios == TRUE.ratios
    assert _octave_phase(chosen.scales) == pytest.approx(_octave_phase(TRUE.scales))
    assert all(s in TRUE.scales or s / 2 in TRUE.scales for s in chosen.scales)
    before = positional_quality(boxes, config, TRUE)
    after = positional_quality(boxes, config, chosen)
    assert (after["bpr_positional"], after["mean_best_iou_positional"]) >= (
        before["bpr_positional"], before["mean_best_iou_positional"])


def _write_dataset(root: Path, net_hw: tuple[int, int], per_image: int = 40, images: int = 6) -> Path:
    """Images whose boxes, once letterboxed to ``net_hw``, come from TRUE's clusters (levels P3..P5)."""
    orig_hw = (360, 640)
    lb = Letterbox.fit(orig_hw, net_hw)
    sx, sy = lb.scale_xy
    sizes = _cluster_sizes(per_image * images, levels=3, seed=5, noise=0.03).numpy()
    rng = np.random.default_rng(0)
    for sub in ("images", "det", "da"):
        (root / sub / "train").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        name = f"img{i}"
        cv2.imwrite(str(root / "images" / "train" / f"{name}.jpg"), np.zeros((*orig_hw, 3), np.uint8))
        cv2.imwrite(str(root / "da" / "train" / f"{name}.png"), np.zeros(orig_hw, np.uint8))
        objects = []
        for k, (w, h) in enumerate(sizes[i * per_image : (i + 1) * per_image]):
            x1 = rng.uniform(lb.pad_left, lb.pad_left + lb.resized_hw[1] - w)
            y1 = rng.uniform(lb.pad_top, lb.pad_top + lb.resized_hw[0] - h)
            box = {"x1": (x1 - lb.pad_left) / sx, "y1": (y1 - lb.pad_top) / sy,
                   "x2": (x1 + w - lb.pad_left) / sx, "y2": (y1 + h - lb.pad_top) / sy}
            objects.append({"category": "car", "id": k, "box2d": box})
        label = {"name": name, "frames": [{"objects": objects}]}
        (root / "det" / "train" / f"{name}.json").write_text(json.dumps(label))
    project = root / "project.yaml"
    project.write_text("dataroot: images\nlabelroot: det\nsegroot: [da]\nobj_list: [car]\nseg_list: [road]\n")
    return project


def test_cli_writes_a_loadable_config_with_better_anchors(tmp_path: Path):
    source = tmp_path / "tiny.yaml"
    source.write_text(
        "# a comment\nname: tiny_anchors\ncompound_coef: 0\ninput_size: [256, 512]\nobj_list: [car]\n"
        "seg_list: [road]\nseg_mode: binary\nanchor_scales: [1.0, 1.1, 1.2]\n"
        "anchor_ratios: [[0.25, 4.0], [0.3, 3.3], [0.35, 2.9]]\nmean: [0.5, 0.5, 0.5]\nstd: [0.2, 0.2, 0.2]\n"
    )
    project = _write_dataset(tmp_path / "data", (256, 512))
    out, report_path = tmp_path / "fitted.yaml", tmp_path / "report.json"
    argv = ["--project", str(project), "--model-config", str(source), "--output", str(out), "--seed", "0",
            "--report", str(report_path)]
    assert main(argv) == 0
    fitted = ModelConfig.from_yaml(out)
    original = ModelConfig.from_yaml(source)
    kept = ("name", "compound_coef", "input_size", "obj_list", "seg_list", "seg_mode", "mean", "std", "anchor_scale")
    assert all(getattr(fitted, key) == getattr(original, key) for key in kept)
    assert fitted.num_anchors == 9
    # k-means finds the clusters' shapes; whole-octave shifts of a scale are chosen for grid coverage.
    assert _octave_phase(fitted.anchor_scales) == pytest.approx(_octave_phase(TRUE.scales), abs=0.03)
    assert [list(r) for r in fitted.anchor_ratios] == [pytest.approx(list(r), rel=0.03) for r in TRUE.ratios]
    assert all(round(s, 4) == s for s in fitted.anchor_scales)
    report = json.loads(report_path.read_text())
    assert report["boxes"] == 240
    assert report["fitted"]["bpr_shape"] > report["current"]["bpr_shape"]
    assert report["fitted"]["bpr_positional"] > report["current"]["bpr_positional"]
    assert report["fitted"]["mean_best_iou_positional"] > report["current"]["mean_best_iou_positional"]
    assert report["fitted"]["mean_best_iou_shape"] > report["current"]["mean_best_iou_shape"]
    assert out.read_text().startswith("# Anchors fitted by hybridnets-anchors")
    # Same seed, same file.
    again = tmp_path / "again.yaml"
    assert main([*argv[:5], str(again), "--seed", "0"]) == 0
    assert yaml.safe_load(again.read_text()) == yaml.safe_load(out.read_text())
    assert not math.isnan(report["fitted"]["mean_best_iou_shape"])
