"""``hybridnets-synth``: write synthetic driving scenes as a BDD100K-layout dataset with exact labels.

Layout under ``--output``::

    images/{train,val}/<name>.jpg
    det_annotations/{train,val}/<name>.json      BDD100K per-frame JSON, boxes in original pixels
    da_seg_annotations/{train,val}/<name>.png    255 on drivable road, 0 elsewhere
    ll_seg_annotations/{train,val}/<name>.png    255 on lane markings
    ground_truth/{train,val}/<name>.json         with --ground-truth: CameraInfo, camera pose and the road, lane lines
                                                 and vehicle contact points in metres (synth.ground.GroundTruth)
    dataset.yaml                                 project config (paths relative to this file)

``--domain target`` draws the shifted target domain of ``synth.domain`` (dusk/night, fog, a higher and wider camera,
amber short-dash markings) instead of the default source scenes.

``--max-roll-deg`` / ``--max-pitch-deg`` turn each camera by a random real roll / pitch (rendered exactly, see
``synth.ground``); with both 0 (the default) every image is the same as without them.

Image ``index`` of ``split`` is drawn from ``SeedSequence([seed + index, split code])`` (train 0, val 1), so any image
can be regenerated alone with ``synth_sample`` and train and val never share a scene for one seed. Scenes of seed S
image i and seed S+i image 0 coincide; use seeds far apart (e.g. 0 and 1000000) for independent sets.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
import multiprocessing
from pathlib import Path

import cv2
import numpy as np
import yaml

from hybridnets_ros.synth.domain import DOMAINS, SOURCE, Domain, shift_world
from hybridnets_ros.synth.ground import GroundTruth, render_posed
from hybridnets_ros.synth.scene import Scene, generate_drive, generate_scene, scene_to_bdd
from hybridnets_ros.synth.world import sample_world

__all__ = ["synth_sample", "synth_sample_with_truth", "write_dataset", "parse_sizes", "DEFAULT_SIZES"]

LOG = logging.getLogger(__name__)
SPLIT_CODES = {"train": 0, "val": 1}
DEFAULT_SIZES = "1280x720:6,960x540,1024x768,800x600,1242x375"
FOLDERS = ("images", "det_annotations", "da_seg_annotations", "ll_seg_annotations")


def parse_sizes(text: str) -> list[tuple[tuple[int, int], float]]:
    """``"1280x720:6,960x540"`` -> [((1280, 720), 6.0), ((960, 540), 1.0)]: sizes (width, height) with weights."""
    sizes = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        dims, _, weight = item.partition(":")
        try:
            width, height = (int(v) for v in dims.lower().split("x"))
            w = float(weight) if weight else 1.0
        except ValueError as err:
            raise ValueError(f"bad size {item!r}: expected WIDTHxHEIGHT or WIDTHxHEIGHT:WEIGHT") from err
        if width < 64 or height < 64 or w <= 0:
            raise ValueError(f"bad size {item!r}: width and height must be >= 64 and the weight > 0")
        sizes.append(((width, height), w))
    if not sizes:
        raise ValueError("no image sizes given")
    return sizes


def sample_name(split: str, index: int) -> str:
    return f"synth_{split}_{index:06d}"


def _sample_rng_and_size(seed: int, split: str, index: int, sizes: Sequence[tuple[tuple[int, int], float]] | None
                         ) -> tuple[np.random.Generator, tuple[int, int]]:
    sizes = parse_sizes(DEFAULT_SIZES) if sizes is None else list(sizes)
    rng = np.random.default_rng(np.random.SeedSequence([seed + index, SPLIT_CODES[split]]))
    weights = np.array([w for _, w in sizes], dtype=np.float64)
    return rng, sizes[int(rng.choice(len(sizes), p=weights / weights.sum()))][0]


def synth_sample(seed: int, split: str, index: int,
                 sizes: Sequence[tuple[tuple[int, int], float]] | None = None,
                 domain: Domain = SOURCE) -> tuple[str, Scene]:
    """The dataset's image ``index`` of ``split`` in ``domain``: (file stem, scene), independent of every other
    image."""
    rng, size = _sample_rng_and_size(seed, split, index, sizes)
    return sample_name(split, index), generate_scene(rng, size, domain)


def synth_sample_with_truth(seed: int, split: str, index: int,
                            sizes: Sequence[tuple[tuple[int, int], float]] | None = None, max_roll: float = 0.0,
                            max_pitch: float = 0.0, domain: Domain = SOURCE) -> tuple[str, Scene, GroundTruth]:
    """``synth_sample`` with its ground truth in metres, from a camera rolled and pitched by up to ``max_roll`` /
    ``max_pitch`` rad (uniform; the draws happen only for a non-zero maximum, so with zeros the scene is exactly
    ``synth_sample``'s)."""
    rng, (width, height) = _sample_rng_and_size(seed, split, index, sizes)
    world = shift_world(sample_world(rng, int(width), int(height)), rng, domain)
    roll = float(rng.uniform(-max_roll, max_roll)) if max_roll else 0.0
    pitch = float(rng.uniform(-max_pitch, max_pitch)) if max_pitch else 0.0
    scene, truth = render_posed(world, roll, pitch, rng)
    return sample_name(split, index), scene, truth


def _write_sample(root: Path, split: str, name: str, scene: Scene, jpeg_quality: int) -> None:
    def write(path: Path, image: np.ndarray, params: list[int]) -> None:
        if not cv2.imwrite(str(path), image, params):
            raise OSError(f"could not write {path}")

    write(root / "images" / split / f"{name}.jpg", scene.image_bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    write(root / "da_seg_annotations" / split / f"{name}.png", scene.drivable_mask, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    write(root / "ll_seg_annotations" / split / f"{name}.png", scene.lane_mask, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    (root / "det_annotations" / split / f"{name}.json").write_text(json.dumps(scene_to_bdd(scene, name)))


def _job(args: tuple[Path, int, str, int, list, int, bool, float, float, str]) -> int:
    """Write one image and its labels (and its ground truth when asked); returns its number of boxes."""
    root, seed, split, index, sizes, jpeg_quality, ground_truth, max_roll, max_pitch, domain_name = args
    domain = DOMAINS[domain_name]
    if ground_truth or max_roll or max_pitch:
        name, scene, truth = synth_sample_with_truth(seed, split, index, sizes, max_roll, max_pitch, domain)
        if ground_truth:
            (root / "ground_truth" / split / f"{name}.json").write_text(json.dumps(truth.to_json()))
    else:
        name, scene = synth_sample(seed, split, index, sizes, domain)
    _write_sample(root, split, name, scene, jpeg_quality)
    return len(scene.boxes)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one image per process; OpenCV's own threads would only oversubscribe the cores


def project_config() -> dict:
    """The project config of a written dataset: folders relative to the yaml, one class (car) and road + lane."""
    return {
        "dataroot": "images",
        "labelroot": "det_annotations",
        "segroot": ["da_seg_annotations", "ll_seg_annotations"],
        "obj_list": ["car"],
        "obj_combine": ["car", "bus", "truck"],
        "seg_list": ["road", "lane"],
        "train_split": "train",
        "val_split": "val",
    }


def write_dataset(root: str | Path, num_train: int, num_val: int, seed: int = 0, sizes: str = DEFAULT_SIZES,
                  workers: int = 1, jpeg_quality: int = 95, ground_truth: bool = False, max_roll_deg: float = 0.0,
                  max_pitch_deg: float = 0.0, domain: str = "source") -> Path:
    """Write the whole dataset of ``domain`` (a name in ``synth.domain.DOMAINS``) and its ``dataset.yaml``; returns
    the yaml's path."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}: expected one of {', '.join(DOMAINS)}")
    root = Path(root).expanduser().resolve()
    parsed = parse_sizes(sizes)
    for folder in FOLDERS + (("ground_truth",) if ground_truth else ()):
        for split in SPLIT_CODES:
            (root / folder / split).mkdir(parents=True, exist_ok=True)
    angles = (float(np.deg2rad(max_roll_deg)), float(np.deg2rad(max_pitch_deg)))
    jobs = [(root, seed, split, i, parsed, jpeg_quality, ground_truth, *angles, domain)
            for split, count in (("train", num_train), ("val", num_val)) for i in range(count)]
    start = time.perf_counter()
    boxes = 0
    step = max(50, len(jobs) // 10)
    if workers > 1 and len(jobs) > 1:
        # spawn, not fork: a caller that already runs threads (torch, DDS) would deadlock forked children.
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for done, n in enumerate(pool.imap_unordered(_job, jobs, chunksize=8), 1):
                boxes += n
                if done % step == 0:
                    LOG.info("%d/%d images", done, len(jobs))
    else:
        for done, job in enumerate(jobs, 1):
            boxes += _job(job)
            if done % step == 0:
                LOG.info("%d/%d images", done, len(jobs))
    header = (f"# Synthetic driving scenes written by hybridnets-synth: {domain} domain, seed {seed}, {num_train} "
              f"train and {num_val} val images, sizes {sizes}\n")
    yaml_path = root / "dataset.yaml"
    yaml_path.write_text(header + yaml.safe_dump(project_config(), sort_keys=False, default_flow_style=None))
    LOG.info("wrote %d images with %d boxes to %s in %.1f s", len(jobs), boxes, root, time.perf_counter() - start)
    return yaml_path
