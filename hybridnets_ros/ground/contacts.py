"""Where detected vehicles stand: the ground point under the bottom centre of each box, and the box's size there."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridnets_ros.ground.projector import GroundProjector


@dataclass(frozen=True)
class GroundContacts:
    """Per box: ``points`` (N,3) contact point in the ground frame; ``width`` (N,) and ``height`` (N,) metres of the
    box where its rays cross the vertical plane through the contact point facing the camera; ``valid`` (N,) bool
    (False: the bottom edge is above the horizon or beyond range; values NaN)."""

    points: np.ndarray
    width: np.ndarray
    height: np.ndarray
    valid: np.ndarray


def ground_contacts(projector: GroundProjector, boxes: np.ndarray) -> GroundContacts:
    """Contacts of boxes (N,4) x1y1x2y2 in the image's pixel coordinates (the box's extreme projected points)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
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
