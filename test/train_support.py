"""Helpers for the training tests: hand-made BDD100K-layout scenes, project files and small model configs."""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from pathlib import Path

import cv2
import numpy as np

from hybridnets_ros.model.config import ModelConfig, load_model_config

REPO_ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("images", "det_annotations", "da_seg_annotations", "ll_seg_annotations")
PROJECT_YAML = """\
dataroot: images
labelroot: det_annotations
segroot: [da_seg_annotations, ll_seg_annotations]
obj_list: [car]
obj_combine: [car, bus, truck, train]
seg_list: [road, lane]
"""


def write_project(root: Path, text: str = PROJECT_YAML) -> Path:
    for folder in FOLDERS:
        for split in ("train", "val"):
            (root / folder / split).mkdir(parents=True, exist_ok=True)
    path = root / "project.yaml"
    path.write_text(text)
    return path


def write_scene(
    root: Path,
    split: str,
    name: str,
    image: np.ndarray,
    objects: list[dict],
    road: np.ndarray,
    lane: np.ndarray,
) -> None:
    """One image (H,W,3 RGB), its BDD100K JSON (objects as given) and its two masks (H,W bool)."""
    cv2.imwrite(str(root / "images" / split / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    label = {"name": name, "frames": [{"timestamp": 10000, "objects": objects}]}
    (root / "det_annotations" / split / f"{name}.json").write_text(json.dumps(label))
    cv2.imwrite(str(root / "da_seg_annotations" / split / f"{name}.png"), road.astype(np.uint8) * 255)
    cv2.imwrite(str(root / "ll_seg_annotations" / split / f"{name}.png"), lane.astype(np.uint8) * 255)


def box_object(category: str, box: tuple[float, float, float, float], index: int = 0) -> dict:
    x1, y1, x2, y2 = box
    return {"category": category, "id": index, "attributes": {"occluded": False},
            "box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}}


def simple_scene(height: int, width: int, boxes: list[tuple[int, int, int, int]], seed: int = 0):
    """A plain road scene: grey road on the lower half, a white lane stripe, red vehicles (non-road pixels).

    Returns (image (H,W,3) uint8 RGB, road (H,W) bool, lane (H,W) bool). Vehicles occlude road and lane.
    """
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (110, 150, 200)
    road = np.zeros((height, width), bool)
    road[height // 2 :] = True
    lane = np.zeros((height, width), bool)
    stripe = max(2, width // 80)
    lane[height // 2 :, width // 2 - stripe : width // 2 + stripe] = True
    image[road] = (70, 70, 70)
    image[lane] = (240, 240, 240)
    for x1, y1, x2, y2 in boxes:
        colour = (200 + int(rng.integers(0, 50)), 20, 20)
        image[y1:y2, x1:x2] = colour
        road[y1:y2, x1:x2] = False
        lane[y1:y2, x1:x2] = False
    return image, road, lane


def small_config(tmp_dir: Path, input_hw: tuple[int, int] = (128, 256), base: str = "hybridnets_d0_synth") -> Path:
    """A bundled config at another input size, written as yaml (what --model-config accepts)."""
    config: ModelConfig = dataclasses.replace(load_model_config(base), name=f"{base}_{input_hw[0]}x{input_hw[1]}",
                                              input_size=input_hw)
    path = tmp_dir / f"{config.name}.yaml"
    config.to_yaml(path)
    return path


def make_toy_dataset(root: Path, num_train: int = 4, num_val: int = 2, size: tuple[int, int] = (288, 512),
                     val_is_train: bool = False) -> Path:
    """A dataset of simple scenes with one or two large vehicles each; returns the project yaml path.

    ``val_is_train``: the val split holds the train images (overfitting checks).
    """
    project = write_project(root)
    rng = np.random.default_rng(123)
    height, width = size
    for split, count in (("train", num_train), ("val", num_val)):
        for i in range(count):
            boxes = []
            for k in range(1 + i % 2):  # one vehicle per half of the image, car-like proportions
                w = int(rng.integers(width // 8, width // 4))
                h = int(w * rng.uniform(0.6, 1.1))
                x1 = k * width // 2 + int(rng.integers(0, width // 2 - w))
                y1 = int(rng.integers(height // 3, height - h))
                boxes.append((x1, y1, x1 + w, y1 + h))
            image, road, lane = simple_scene(height, width, boxes, seed=i)
            objects = [box_object("car", b, k) for k, b in enumerate(boxes)]
            write_scene(root, split, f"{split}{i:03d}", image, objects, road, lane)
            if val_is_train and split == "train":
                write_scene(root, "val", f"{split}{i:03d}", image, objects, road, lane)
    return project


def subprocess_env() -> dict[str, str]:
    """Environment for a training subprocess: the repo importable, few threads (the CI box has 2 cores)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for rendezvous and process-group stores)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SYNTH_CACHE: dict[str, Path] = {}


def synth_project(tmp_path_factory) -> Path:
    """The session's tiny synthetic dataset (8 train, 4 val images of mixed sizes); its project yaml path."""
    if "synth" not in _SYNTH_CACHE:
        from hybridnets_ros.synth.dataset import write_dataset

        root = tmp_path_factory.mktemp("synth")
        _SYNTH_CACHE["synth"] = write_dataset(root, num_train=8, num_val=4, seed=0, workers=1)
    return _SYNTH_CACHE["synth"]


def small_trainer(project: Path, config: str | Path, output: Path, **overrides):
    """A CPU Trainer for short loops on ``project`` with model ``config``: batch 2, no workers, no validation, no
    augmentation, constant lr 1e-3, seed 0; ``overrides`` replace or add TrainOptions fields."""
    from hybridnets_ros.training.trainer import Trainer, TrainOptions

    options = dict(project=str(project), model_config=str(config), output=str(output), batch_size=2, workers=0,
                   val_every=0, device="cpu", no_augment=True, lr=1e-3, scheduler="none", seed=0)
    options.update(overrides)
    return Trainer(TrainOptions(**options))
