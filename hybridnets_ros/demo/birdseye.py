"""The demo's bird's-eye panel: the node's drivable grid seen from above, with the lane lines, the vehicles' ground
contacts and range rings, drawn beside the camera overlay.

The panel shows the grid's rectangle of ``ground_frame`` with x (forward) up and y (left) to the left, at one scale
for both axes, so distances read true; its height is the overlay's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

UNKNOWN_BGR = (40, 40, 40)
FREE_BGR = (80, 165, 70)
OCCUPIED_BGR = (70, 70, 125)
RING_BGR = (170, 170, 170)
LANE_BGR = (255, 255, 255)
VEHICLE_BGR = (0, 170, 255)
EGO_BGR = (255, 200, 0)
RING_STEP_M = 10.0
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class PanelView:
    """The ground rectangle [x_min, x_max] x [y_min, y_max] (metres) on a panel ``height`` pixels tall."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float
    height: int

    @property
    def scale(self) -> float:
        """Pixels per metre."""
        return self.height / (self.x_max - self.x_min)

    @property
    def width(self) -> int:
        return int(round((self.y_max - self.y_min) * self.scale))

    def pixels(self, xy: np.ndarray) -> np.ndarray:
        """Ground points (N,2) x, y -> panel pixels (N,2) column, row (float)."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        return np.stack([(self.y_max - xy[:, 1]) * self.scale, (self.x_max - xy[:, 0]) * self.scale], axis=1)


def grid_bounds(grid: Any) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max) of the rectangle an OccupancyGrid covers (its origin is its (x_min, y_min)
    corner, not rotated)."""
    info = grid.info
    x0, y0 = info.origin.position.x, info.origin.position.y
    return x0, x0 + info.width * info.resolution, y0, y0 + info.height * info.resolution


def grid_values(grid: Any) -> np.ndarray:
    """An OccupancyGrid's cells (rows along y, columns along x) int8: 0 free, 100 occupied, -1 unknown."""
    return np.asarray(grid.data, np.int8).reshape(grid.info.height, grid.info.width)


def _grid_image(grid: Any, view: PanelView) -> np.ndarray:
    """(H, W, 3) BGR of the grid's cells, x up and y to the left."""
    colours = np.empty((256, 3), np.uint8)
    colours[:] = OCCUPIED_BGR  # values 1..100 (the node writes only 0, 100 and -1)
    colours[0] = FREE_BGR
    colours[np.uint8(255)] = UNKNOWN_BGR  # -1 as uint8
    cells = grid_values(grid).view(np.uint8).T[::-1, ::-1]  # rows: x descending, columns: y descending
    return cv2.resize(colours[cells], (view.width, view.height), interpolation=cv2.INTER_NEAREST)


def _point(pixel: np.ndarray) -> tuple[int, int]:
    return int(round(pixel[0])), int(round(pixel[1]))


def render_panel(view: PanelView, grid: Any | None, detections_3d: Any | None = None,
                 lane_lines: Any | None = None) -> np.ndarray:
    """The panel (view.height, view.width, 3) uint8 BGR of one frame: the grid (or a note that there is none),
    range rings every ``RING_STEP_M`` around the point under the camera (the frame's origin), the lane lines of a
    MarkerArray's LINE_STRIPs, a dot with its distance per Detection3D's contact point, and the ego marker."""
    if grid is not None:
        panel = _grid_image(grid, view)
    else:
        panel = np.full((view.height, view.width, 3), UNKNOWN_BGR, np.uint8)
        cv2.putText(panel, "no grid for this frame", (10, view.height // 2), FONT, 0.6, RING_BGR, 1, cv2.LINE_AA)
    ego = view.pixels(np.zeros((1, 2)))[0]
    farthest = np.hypot(max(abs(view.x_min), abs(view.x_max)), max(abs(view.y_min), abs(view.y_max)))
    for ring in np.arange(RING_STEP_M, farthest + 1e-9, RING_STEP_M):
        radius = int(round(ring * view.scale))
        cv2.circle(panel, _point(ego), radius, RING_BGR, 1, cv2.LINE_AA)
        label = view.pixels(np.array([[ring, 0.0]]))[0]
        cv2.putText(panel, f"{ring:g} m", (int(label[0]) + 4, int(label[1]) + 14), FONT, 0.45, RING_BGR, 1,
                    cv2.LINE_AA)
    if lane_lines is not None:
        for marker in lane_lines.markers:
            if marker.type == marker.LINE_STRIP and len(marker.points) > 1:
                line = view.pixels(np.array([[p.x, p.y] for p in marker.points]))
                cv2.polylines(panel, [np.rint(line).astype(np.int32)], False, LANE_BGR, 2, cv2.LINE_AA)
    if detections_3d is not None:
        for detection in detections_3d.detections:
            position = detection.results[0].pose.pose.position
            dot = view.pixels(np.array([[position.x, position.y]]))[0]
            cv2.circle(panel, _point(dot), 6, VEHICLE_BGR, -1, cv2.LINE_AA)
            cv2.putText(panel, f"{np.hypot(position.x, position.y):.1f} m", (int(dot[0]) + 8, int(dot[1]) + 5),
                        FONT, 0.45, VEHICLE_BGR, 1, cv2.LINE_AA)
    size = 9
    triangle = np.array([[ego[0], ego[1] - 2 * size], [ego[0] - size, ego[1]], [ego[0] + size, ego[1]]])
    cv2.fillPoly(panel, [np.rint(triangle).astype(np.int32)], EGO_BGR, cv2.LINE_AA)
    frame = grid.header.frame_id if grid is not None else "ground"
    cv2.putText(panel, f"bird's-eye, {frame}", (8, 20), FONT, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return panel
