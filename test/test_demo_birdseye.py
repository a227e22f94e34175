"""The demo's bird's-eye panel: grid cells, lane lines and ground contacts land where their metres say, x up and y
(left) to the left, at one scale."""
from __future__ import annotations

import numpy as np
import pytest
from geometry_msgs.msg import Point
from nav_msgs.msg import OccupancyGrid
from visualization_msgs.msg import Marker, MarkerArray

from hybridnets_ros.demo.birdseye import (
    FREE_BGR,
    LANE_BGR,
    OCCUPIED_BGR,
    UNKNOWN_BGR,
    VEHICLE_BGR,
    PanelView,
    grid_bounds,
    render_panel,
)

vision_msgs = pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not installed: run `make setup`")

RESOLUTION = 0.1
X_RANGE, Y_RANGE = (0.0, 50.0), (-15.0, 15.0)


def _grid() -> OccupancyGrid:
    """Seen up to 40 m: drivable where 0.5 < y < 4 (left of the camera), not drivable elsewhere; unknown beyond."""
    x = X_RANGE[0] + (np.arange(int(50 / RESOLUTION)) + 0.5) * RESOLUTION
    y = Y_RANGE[0] + (np.arange(int(30 / RESOLUTION)) + 0.5) * RESOLUTION
    gx, gy = np.meshgrid(x, y)
    values = np.where((gy > 0.5) & (gy < 4.0), 0, 100)
    values[gx > 40.0] = -1
    grid = OccupancyGrid()
    grid.header.frame_id = "base_footprint"
    grid.info.resolution = RESOLUTION
    grid.info.width, grid.info.height = len(x), len(y)
    grid.info.origin.position.x, grid.info.origin.position.y = X_RANGE[0], Y_RANGE[0]
    grid.data = values.astype(np.int8).ravel().tolist()
    return grid


def _contacts(*points: tuple[float, float]) -> object:
    detections = []
    for x, y in points:
        hypothesis = vision_msgs.ObjectHypothesisWithPose()
        hypothesis.pose.pose.position.x, hypothesis.pose.pose.position.y = x, y
        detections.append(vision_msgs.Detection3D(results=[hypothesis]))
    return vision_msgs.Detection3DArray(detections=detections)


def _lane(y: float) -> MarkerArray:
    line = Marker(type=Marker.LINE_STRIP, points=[Point(x=float(x), y=y) for x in np.arange(5.0, 35.0, 0.5)])
    return MarkerArray(markers=[Marker(action=Marker.DELETEALL), line])


def _at(panel: np.ndarray, view: PanelView, x: float, y: float) -> tuple[int, ...]:
    column, row = np.rint(view.pixels(np.array([[x, y]]))[0]).astype(int)
    return tuple(int(v) for v in panel[row, column])


def test_panel_places_cells_lines_and_contacts_by_their_metres() -> None:
    grid = _grid()
    view = PanelView(*grid_bounds(grid), 500)
    assert (view.scale, view.width) == (10.0, 300)
    panel = render_panel(view, grid, _contacts((25.0, -3.0)), _lane(-1.75))
    assert panel.shape == (500, 300, 3) and panel.dtype == np.uint8
    assert _at(panel, view, 15.0, 2.0) == FREE_BGR  # left of the camera is the panel's left
    assert _at(panel, view, 15.0, -2.5) == OCCUPIED_BGR
    assert _at(panel, view, 15.0, 8.0) == OCCUPIED_BGR
    assert _at(panel, view, 45.0, 5.0) == UNKNOWN_BGR
    assert _at(panel, view, 25.0, -3.0) == VEHICLE_BGR
    assert _at(panel, view, 12.0, -1.75) == LANE_BGR
    # The drivable band is where the grid says: 3.5 m wide, seen from 0 to 40 m.
    free = np.all(panel == FREE_BGR, axis=2)
    columns = np.flatnonzero(free.any(axis=0))
    assert abs((columns.max() - columns.min() + 1) / view.scale - 3.5) <= 0.2
    assert abs(free.sum() / view.scale**2 - 3.5 * 40.0) / (3.5 * 40.0) < 0.1  # rings and labels cover a little


def test_panel_without_a_grid_says_so_and_keeps_its_size() -> None:
    view = PanelView(*X_RANGE, *Y_RANGE, 720)
    panel = render_panel(view, None, _contacts((10.0, 0.0)))
    assert panel.shape == (720, view.width, 3)
    assert not np.all(panel == FREE_BGR, axis=2).any()
    assert _at(panel, view, 10.0, 0.0) == VEHICLE_BGR
