"""Public API of the synthetic driving scenes: one still scene, or a smooth drive through one world.

>>> scene = generate_scene(7, (1280, 720))
>>> scene.image_bgr.shape, scene.drivable_mask.shape
((720, 1280, 3), (720, 1280))
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from hybridnets_ros.synth.domain import SOURCE, Domain, shift_world
from hybridnets_ros.synth.render import Scene, render
from hybridnets_ros.synth.world import sample_world

__all__ = ["Scene", "generate_scene", "generate_drive", "scene_to_bdd"]


def _rng(seed: int | np.random.Generator | np.random.SeedSequence) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def generate_scene(seed: int | np.random.Generator | np.random.SeedSequence,
                   size: tuple[int, int] = (1280, 720), domain: Domain = SOURCE) -> Scene:
    """A random still scene of ``size`` = (width, height) in ``domain`` (see ``synth.domain``); the same seed gives
    the same bytes."""
    width, height = size
    rng = _rng(seed)
    world = shift_world(sample_world(rng, int(width), int(height)), rng, domain)
    return render(world, 0.0, rng)


def generate_drive(seed: int, num_frames: int, size: tuple[int, int] = (1280, 720),
                   fps: float = 10.0, domain: Domain = SOURCE) -> Iterator[Scene]:
    """``num_frames`` consecutive frames of one world in ``domain`` seen from a car driving along its lane at
    ``fps``.

    The road, lane dashes, traffic and roadside objects move continuously; vehicle ``ids`` stay the same across
    frames. Frames are generated lazily; frame k is reproducible from (seed, k).
    """
    width, height = size
    rng = np.random.default_rng(seed)
    world = shift_world(sample_world(rng, int(width), int(height), duration=num_frames / fps), rng, domain)
    for k in range(num_frames):
        yield render(world, k / fps, np.random.default_rng([seed, k]))


def scene_to_bdd(scene: Scene, name: str) -> dict:
    """The BDD100K per-frame label dict of ``scene`` (boxes in original pixels)."""
    objects = [
        {"category": category, "id": int(k),
         "box2d": {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2)}}
        for k, (category, (x1, y1, x2, y2)) in enumerate(zip(scene.categories, scene.boxes.tolist()))
    ]
    return {"name": name, "frames": [{"objects": objects}]}
