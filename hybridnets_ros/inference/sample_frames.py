"""Frames for export checks and benchmarks: image files, or deterministic synthetic road-like scenes."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from hybridnets_ros.conventions import IMAGE_SUFFIXES



def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as (H,W,3) uint8 RGB; FileNotFoundError/ValueError when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image '{path}' not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ValueError(f"'{path}' cannot be read as an image")
    return np.ascontiguousarray(image[:, :, ::-1])


def image_files(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def synthetic_frames(count: int, hw: Sequence[int] = (720, 1280), seed: int = 0) -> list[np.ndarray]:
    """``count`` (H,W,3) uint8 RGB frames: sky/road gradient, lane markings, a few boxes ("cars"), mild noise."""
    rng = np.random.default_rng(seed)
    h, w = int(hw[0]), int(hw[1])
    frames = []
    for _ in range(count):
        rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        sky = np.array([135, 170, 215], dtype=np.float32)
        road = np.array([90, 90, 95], dtype=np.float32)
        horizon = rng.uniform(0.35, 0.5)
        image = np.where(rows < horizon, sky, road) * (0.8 + 0.4 * rows)
        image = np.broadcast_to(image, (h, w, 3)).copy()
        for lane_x in (0.3, 0.5, 0.7):
            x = int(lane_x * w + rng.integers(-w // 20, w // 20))
            image[int(horizon * h):, max(x - 3, 0):x + 3] = 235
        for _ in range(int(rng.integers(2, 6))):
            bw, bh = int(rng.integers(w // 16, w // 5)), int(rng.integers(h // 12, h // 4))
            x0 = int(rng.integers(0, w - bw))
            y0 = int(rng.integers(int(horizon * h), h - bh))
            image[y0:y0 + bh, x0:x0 + bw] = rng.integers(20, 230, size=3)
        image += rng.normal(0.0, 6.0, size=image.shape)
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames
