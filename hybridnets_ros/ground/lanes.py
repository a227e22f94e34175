"""Lane-line polylines on the ground: split the lane pixels' ground points into lines, fit each, resample.

Lines run roughly along the ground frame's x axis (forward). The points are binned into a bird's-eye raster with
cells long along x and narrow across; dilating that raster mostly along x joins the dashes of one line (gaps up to
``max_gap``) while lines a lane apart stay separate, and its connected components are the line instances. Each
instance is fitted as y = p(x) through its per-cell mean points (so near rows, which cover many pixels per metre,
do not outweigh far ones) and resampled every ``spacing`` metres. Lines are returned left to right (descending y).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class LaneSpec:
    """Region (ground-frame metres) and tuning of the lane-line extraction."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float
    along_cell: float = 0.5  # m, raster cell length along x
    across_cell: float = 0.1  # m, raster cell width along y
    max_gap: float = 12.0  # m, longest gap between dashes of one line
    join_width: float = 1.0  # m, lateral reach of the join (less than a lane)
    min_length: float = 3.0  # m, shorter instances are dropped as noise
    spacing: float = 0.5  # m between resampled points


@dataclass(frozen=True)
class LanePolyline:
    """One lane line: ``points`` (M,3) float32 in the ground frame, every ``spacing`` m along x; ``confidence`` in
    [0, 1] (mean over the line's pixels)."""

    points: np.ndarray
    confidence: float


def lane_polylines(points: np.ndarray, confidence: np.ndarray, spec: LaneSpec) -> list[LanePolyline]:
    """Lane-line instances from ground points (N,3) of lane pixels and their confidences (N,), left to right."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    confidence = np.asarray(confidence, np.float64).ravel()
    inside = ((points[:, 0] >= spec.x_min) & (points[:, 0] < spec.x_max) & (points[:, 1] >= spec.y_min)
              & (points[:, 1] < spec.y_max))
    points, confidence = points[inside], confidence[inside]
    if len(points) == 0:
        return []
    rows = int(np.ceil((spec.y_max - spec.y_min) / spec.across_cell))
    cols = int(np.ceil((spec.x_max - spec.x_min) / spec.along_cell))
    row = np.minimum(((points[:, 1] - spec.y_min) / spec.across_cell).astype(np.int64), rows - 1)
    col = np.minimum(((points[:, 0] - spec.x_min) / spec.along_cell).astype(np.int64), cols - 1)
    cell = row * cols + col
    # Mean point and confidence per occupied raster cell (bincount over the small raster: no sort).
    size = rows * cols
    all_counts = np.bincount(cell, minlength=size)
    cells = np.flatnonzero(all_counts)
    counts = all_counts[cells]
    mean_x = np.bincount(cell, points[:, 0], size)[cells] / counts
    mean_y = np.bincount(cell, points[:, 1], size)[cells] / counts
    conf_sum = np.bincount(cell, confidence, size)[cells]
    raster = (all_counts > 0).astype(np.uint8).reshape(rows, cols)
    kernel = np.ones((2 * int(round(spec.join_width / 2 / spec.across_cell)) + 1,
                      2 * int(round(spec.max_gap / 2 / spec.along_cell)) + 1), np.uint8)
    count, labels = cv2.connectedComponents(cv2.dilate(raster, kernel), connectivity=8)
    instance = labels.flat[cells]
    lines = []
    for label in range(1, count):
        members = instance == label
        line = _fit(mean_x[members], mean_y[members], spec)
        if line is not None:
            lines.append(LanePolyline(line, float(conf_sum[members].sum() / counts[members].sum())))
    return _left_to_right(lines)


def _fit(x: np.ndarray, y: np.ndarray, spec: LaneSpec) -> np.ndarray | None:
    """Polyline (M,3) float32 of y = p(x) through cell means (K,) each; None when the instance is too short."""
    start, end = float(x.min()), float(x.max())
    length = end - start
    if length < spec.min_length or len(x) < 3:
        return None
    # Degree grows with length: a short piece cannot support a curve, a long one bends.
    degree = min(1 if length < 10 else 2 if length < 25 else 3, len(x) - 1)
    centre = (start + end) / 2  # fitting about the middle keeps the least-squares problem well conditioned
    coefficients = np.polyfit(x - centre, y, degree)
    samples = np.arange(start, end + 1e-9, spec.spacing)
    lateral = np.polyval(coefficients, samples - centre)
    return np.stack([samples, lateral, np.zeros_like(samples)], axis=1).astype(np.float32)


def _left_to_right(lines: list[LanePolyline]) -> list[LanePolyline]:
    """Sort by lateral position where the lines overlap along x (at the nearest x that all of them reach, clipped)."""
    if len(lines) < 2:
        return lines
    reference = max(float(line.points[0, 0]) for line in lines)

    def lateral(line: LanePolyline) -> float:
        index = int(np.argmin(np.abs(line.points[:, 0] - reference)))
        return float(line.points[index, 1])

    return sorted(lines, key=lateral, reverse=True)
