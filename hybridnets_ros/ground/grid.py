"""Drivable-area occupancy grid on the ground plane, filled by looking up each cell's pixel in the class mask.

Values follow nav_msgs/OccupancyGrid: 0 = seen drivable, 100 = seen not drivable, -1 = not seen (outside the view,
beyond range, or hidden behind a detected vehicle). Each cell takes the class of the pixel its centre projects to,
so every cell in view is filled however far away it is (no holes between image rows).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hybridnets_ros.ground.projector import GroundProjector

FREE = 0
OCCUPIED = 100
UNKNOWN = -1


@dataclass(frozen=True)
class GridSpec:
    """Cells of ``resolution`` metres covering [x_min, x_max) x [y_min, y_max) of the ground frame.

    Row-major like OccupancyGrid.data: row j runs along y, column i along x; the origin is the (x_min, y_min) corner.
    """

    resolution: float
    x_min: float
    x_max: float
    y_min: float
    y_max: float

    def __post_init__(self) -> None:
        if not self.resolution > 0 or not self.x_max > self.x_min or not self.y_max > self.y_min:
            raise ValueError(f"grid needs resolution > 0 and non-empty ranges, got resolution {self.resolution}, "
                             f"x [{self.x_min}, {self.x_max}], y [{self.y_min}, {self.y_max}]")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) = (cells along y, cells along x)."""
        return (int(round((self.y_max - self.y_min) / self.resolution)),
                int(round((self.x_max - self.x_min) / self.resolution)))

    def centres(self) -> np.ndarray:
        """Cell centres (rows*cols, 2) (x, y) in OccupancyGrid.data order."""
        rows, cols = self.shape
        x = self.x_min + (np.arange(cols) + 0.5) * self.resolution
        y = self.y_min + (np.arange(rows) + 0.5) * self.resolution
        gx, gy = np.meshgrid(x, y)
        return np.stack([gx.ravel(), gy.ravel()], axis=1)


def boxes_mask(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H,W) bool, True inside any box (N,4) x1y1x2y2 (pixels): where vehicles hide the road behind them."""
    mask = np.zeros(shape, bool)
    height, width = shape
    for x1, y1, x2, y2 in np.rint(np.asarray(boxes, np.float64).reshape(-1, 4)).astype(np.int64):
        mask[max(y1, 0):min(y2, height), max(x1, 0):min(x2, width)] = True
    return mask


def occupancy(projector: GroundProjector, spec: GridSpec, class_mask: np.ndarray, drivable_ids: Sequence[int],
              boxes: np.ndarray | None = None) -> np.ndarray:
    """Occupancy values (rows, cols) int8 of ``spec`` from a (H,W) class mask; cells whose pixel has one of
    ``drivable_ids`` are free (lane markings lie on the road, so they are drivable too); ``boxes`` (N,4) hide the
    road behind vehicles."""
    pixels = projector.cell_pixels(spec, spec.centres)
    seen = pixels >= 0
    flat = pixels[seen]
    values = np.full(pixels.shape, UNKNOWN, np.int8)
    cell = np.where(np.isin(class_mask.ravel()[flat], drivable_ids), FREE, OCCUPIED).astype(np.int8)
    if boxes is not None and len(boxes):
        cell[boxes_mask(boxes, class_mask.shape).ravel()[flat]] = UNKNOWN
    values[seen] = cell
    return values.reshape(spec.shape)
