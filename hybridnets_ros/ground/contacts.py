"""Where detected vehicles stand: the ground point under each box's contact row, and the box's size there.

A detector's box bottom is a noisy estimate of where a vehicle meets the road (a box that takes in the shadow in
front of the car ends a few pixels low, which is several percent of the distance at 20-40 m). The drivable-area mask
carries independent evidence: a vehicle hides the road, so scanning up from the box bottom through the box's inner
columns, the first row where part of the road disappears is where the vehicle's lowest parts (its wheels) stand.
:func:`contact_rows` finds that row for every box at once; it only ever raises the contact (the box bottom bounds
it), and keeps the box bottom where the mask gives no such evidence.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hybridnets_ros.ground.projector import GroundProjector

# A row hides the road once this share of the sampled columns is not drivable: the wheels alone hide about a fifth
# of a car's width, while a share this small is still above the mask's speckle inside open road.
HIDDEN_SHARE = 0.05
# The central share of the box's width that is sampled (its edges may show road beside a narrower vehicle).
INNER_WIDTH = 0.8
# Columns sampled per box (a fixed count keeps the gather one array for all boxes).
COLUMN_SAMPLES = 32
# The contact is searched in the lower part of the box only (this share of its height).
SEARCH_HEIGHT = 0.5
# Box coordinates are float; a bottom edge this close above a pixel boundary belongs to the row below that boundary.
EDGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class GroundContacts:
    """Per box: ``points`` (N,3) contact point in the ground frame; ``width`` (N,) and ``height`` (N,) metres of the
    box where its rays cross the vertical plane through the contact point facing the camera; ``valid`` (N,) bool
    (False: the bottom edge is above the horizon or beyond range; values NaN)."""

    points: np.ndarray
    width: np.ndarray
    height: np.ndarray
    valid: np.ndarray


def contact_rows(boxes: np.ndarray, class_mask: np.ndarray, drivable_ids: Sequence[int]) -> np.ndarray:
    """The image row (N,) float64 where each box's vehicle meets the road, from boxes (N,4) x1y1x2y2 (pixels) and
    a (H,W) class mask whose values ``drivable_ids`` are road.

    Per box, rows are scanned upwards from the bottom one over ``COLUMN_SAMPLES`` columns spread across the inner
    ``INNER_WIDTH`` of its width; the contact is the lower edge of the first row where at least ``HIDDEN_SHARE`` of
    them are not drivable. The box bottom is kept when the bottom row already hides the road (nothing drivable to
    rise from: a vehicle on the verge, or one whose bottom is hidden by a nearer one) or no row in the lower
    ``SEARCH_HEIGHT`` of the box does.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    if len(boxes) == 0:
        return y2.copy()
    height, width = class_mask.shape
    inset = (1.0 - INNER_WIDTH) / 2 * (x2 - x1)
    columns = np.floor(np.linspace(x1 + inset, x2 - inset, COLUMN_SAMPLES, axis=1)).astype(np.int64)
    bottom = np.ceil(y2 - EDGE_TOLERANCE).astype(np.int64) - 1  # the last row the box covers
    depth = np.maximum(np.ceil(SEARCH_HEIGHT * (y2 - y1)).astype(np.int64), 1)  # rows searched per box
    steps = np.arange(int(depth.max()))
    rows = bottom[:, None] - steps[None, :]  # (N,K), bottom-up
    inside = (steps[None, :] < depth[:, None]) & (rows >= 0) & (rows < height)
    samples = class_mask[rows.clip(0, height - 1)[:, :, None], columns.clip(0, width - 1)[:, None, :]]  # (N,K,S)
    hidden = ~np.isin(samples, drivable_ids)
    blocked = (hidden.mean(axis=2) >= HIDDEN_SHARE) & inside
    first = np.argmax(blocked, axis=1)
    rises = blocked.any(axis=1) & (first > 0)
    return np.where(rises, (bottom - first + 1).astype(np.float64), y2)


def ground_contacts(projector: GroundProjector, boxes: np.ndarray,
                    rows: np.ndarray | None = None) -> GroundContacts:
    """Contacts of boxes (N,4) x1y1x2y2 in the image's pixel coordinates (the box's extreme projected points),
    standing at ``rows`` (N,) (see :func:`contact_rows`; default each box's bottom edge)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    if rows is not None:
        y2 = np.asarray(rows, np.float64).reshape(-1)
    centre = (x1 + x2) / 2
    points = projector.pixels_to_ground(centre, y2)
    camera = projector.pose.position
    facing = points[:, :2] - camera[:2]
    facing /= np.linalg.norm(facing, axis=1, keepdims=True)
    # Box corners on the plane x.facing = contact.facing (vertical, through the contact point, facing the camera).
    corners = [_on_plane(projector, u, v, points, facing) for u, v in ((x1, y2), (x2, y2), (centre, y1))]
    width = np.linalg.norm(corners[0][:, :2] - corners[1][:, :2], axis=1)
    height = corners[2][:, 2]
    valid = ~np.isnan(points[:, 0])
    return GroundContacts(points=points, width=width, height=height, valid=valid)


def _on_plane(projector: GroundProjector, u: np.ndarray, v: np.ndarray, through: np.ndarray,
              facing: np.ndarray) -> np.ndarray:
    """Where the rays through pixels (N,) meet the vertical planes through points ``through`` (N,3) with horizontal
    normals ``facing`` (N,2): (N,3), NaN where the contact is invalid."""
    normalized = projector.camera.normalized(u, v)
    rays = np.concatenate([normalized, np.ones((len(normalized), 1))], axis=1) @ projector.pose.rotation.T
    camera = projector.pose.position
    with np.errstate(divide="ignore", invalid="ignore"):
        along = np.sum((through[:, :2] - camera[:2]) * facing, axis=1) / np.sum(rays[:, :2] * facing, axis=1)
    return camera + along[:, None] * rays
