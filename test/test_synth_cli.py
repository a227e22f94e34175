"""hybridnets-synth: the BDD100K layout on disk, its project config, and per-image reproducibility."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from hybridnets_ros.synth.cli import main
from hybridnets_ros.synth.dataset import parse_sizes, synth_sample

FOLDERS = {"images": ".jpg", "det_annotations": ".json", "da_seg_annotations": ".png", "ll_seg_annotations": ".png"}
ARGS = ["--num-train", "5", "--num-val", "3", "--seed", "11", "--sizes", "640x360:2,800x600,1242x375"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    assert main(["--output", str(root), *ARGS, "--workers", "2"]) == 0
    return root


def test_layout_names_match_across_folders(dataset: Path) -> None:
    for split, count in (("train", 5), ("val", 3)):
        stems = None
        for folder, suffix in FOLDERS.items():
            files = sorted((dataset / folder / split).iterdir())
            assert all(f.suffix == suffix for f in files), (folder, split)
            names = [f.stem for f in files]
            stems = names if stems is None else stems
            assert names == stems and len(names) == count, (folder, split)
    assert not set(p.stem for p in (dataset / "images" / "train").iterdir()) & set(
        p.stem for p in (dataset / "images" / "val").iterdir())


def test_files_are_consistent(dataset: Path) -> None:
    sizes = set()
    for split in ("train", "val"):
        for image_path in (dataset / "images" / split).iterdir():
            image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            h, w = image.shape[:2]
            sizes.add((w, h))
            for folder in ("da_seg_annotations", "ll_seg_annotations"):
                mask = cv2.imread(str(dataset / folder / split / f"{image_path.stem}.png"), cv2.IMREAD_UNCHANGED)
                assert mask.shape == (h, w) and mask.dtype == np.uint8
                assert set(np.unique(mask).tolist()) <= {0, 255}
            label = json.loads((dataset / "det_annotations" / split / f"{image_path.stem}.json").read_text())
            assert label["name"] == image_path.stem
            for k, obj in enumerate(label["frames"][0]["objects"]):
                assert obj["id"] == k and obj["category"] in {"car", "truck", "bus"}
                box = obj["box2d"]
                assert 0 <= box["x1"] < box["x2"] <= w and 0 <= box["y1"] < box["y2"] <= h
    assert sizes <= {(640, 360), (800, 600), (1242, 375)} and len(sizes) >= 2


def test_project_config(dataset: Path) -> None:
    config = yaml.safe_load((dataset / "dataset.yaml").read_text())
    assert config["obj_list"] == ["car"]
    assert config["obj_combine"] == ["car", "bus", "truck"]
    assert config["seg_list"] == ["road", "lane"]
    assert config["segroot"] == ["da_seg_annotations", "ll_seg_annotations"]
    for key in ("dataroot", "labelroot"):
        assert (dataset / config[key] / "train").is_dir()
    assert (dataset / config["segroot"][1] / "val").is_dir()


def test_any_image_regenerates_alone(dataset: Path) -> None:
    name, scene = synth_sample(11, "val", 2, parse_sizes(ARGS[-1]))
    assert name == "synth_val_000002"
    lanes = cv2.imread(str(dataset / "ll_seg_annotations" / "val" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(lanes, scene.lane_mask)
    label = json.loads((dataset / "det_annotations" / "val" / f"{name}.json").read_text())
    boxes = [[o["box2d"][k] for k in ("x1", "y1", "x2", "y2")] for o in label["frames"][0]["objects"]]
    assert np.allclose(np.array(boxes).reshape(-1, 4), scene.boxes)


def test_rerun_gives_identical_bytes(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert main(["--output", str(again), *ARGS, "--workers", "1"]) == 0
    for path in sorted(dataset.rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (again / path.relative_to(dataset)).read_bytes(), path


def test_parse_sizes() -> None:
    assert parse_sizes("1280x720:6, 960x540") == [((1280, 720), 6.0), ((960, 540), 1.0)]
    for bad in ("", "1280", "1280x720:0", "12x720", "axb"):
        with pytest.raises(ValueError):
            parse_sizes(bad)
