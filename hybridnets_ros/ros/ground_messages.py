"""ROS messages of the ground-plane outputs, built from numpy arrays (pure functions: no node, no publishing)."""
from __future__ import annotations

import array
from collections.abc import Sequence

import numpy as np
from geometry_msgs.msg import Point
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose
from visualization_msgs.msg import Marker, MarkerArray

from hybridnets_ros.ground.contacts import GroundContacts
from hybridnets_ros.ground.grid import GridSpec
from hybridnets_ros.ground.lanes import LanePolyline
from hybridnets_ros.ground.pose import quaternion_from_rotation

XYZ_FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]
LANE_POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("lane_id", "<u4"), ("confidence", "<f4")])
LANE_FIELDS = XYZ_FIELDS + [
    PointField(name="lane_id", offset=12, datatype=PointField.UINT32, count=1),
    PointField(name="confidence", offset=16, datatype=PointField.FLOAT32, count=1),
]
LANE_MARKER_WIDTH = 0.15  # m
# Marker colours cycle through these (RGB) so neighbouring lines differ.
LANE_COLOURS = ((1.0, 0.85, 0.1), (0.1, 0.8, 1.0), (1.0, 0.3, 0.6), (0.4, 1.0, 0.3))


def cloud_message(header: Header, points: np.ndarray) -> PointCloud2:
    """Organised PointCloud2 of (H,W,3) float32 points (NaN = no point): width W, height H, fields x, y, z."""
    height, width = points.shape[:2]
    return PointCloud2(header=header, height=height, width=width, fields=XYZ_FIELDS, is_bigendian=False,
                       point_step=12, row_step=12 * width, data=np.ascontiguousarray(points, "<f4").tobytes(),
                       is_dense=False)


def grid_message(header: Header, spec: GridSpec, values: np.ndarray) -> OccupancyGrid:
    """OccupancyGrid of (rows, cols) int8 values; origin at the spec's (x_min, y_min) corner, not rotated."""
    message = OccupancyGrid(header=header)
    message.info.map_load_time = header.stamp
    message.info.resolution = float(spec.resolution)
    message.info.height, message.info.width = (int(n) for n in values.shape)
    message.info.origin.position.x = float(spec.x_min)
    message.info.origin.position.y = float(spec.y_min)
    message.info.origin.orientation.w = 1.0
    message.data = array.array("b", np.ascontiguousarray(values, np.int8).tobytes())
    return message


def lane_markers(header: Header, lines: Sequence[LanePolyline]) -> MarkerArray:
    """One LINE_STRIP per line (id = its index, left to right), after a DELETEALL that clears the last frame's."""
    markers = [Marker(header=header, ns="lane_lines", action=Marker.DELETEALL)]
    for index, line in enumerate(lines):
        r, g, b = LANE_COLOURS[index % len(LANE_COLOURS)]
        marker = Marker(header=header, ns="lane_lines", id=index, type=Marker.LINE_STRIP, action=Marker.ADD)
        marker.pose.orientation.w = 1.0
        marker.scale.x = LANE_MARKER_WIDTH
        marker.color = ColorRGBA(r=r, g=g, b=b, a=1.0)
        marker.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in line.points]
        markers.append(marker)
    return MarkerArray(markers=markers)


def lane_points_message(header: Header, lines: Sequence[LanePolyline]) -> PointCloud2:
    """Unorganised PointCloud2 (height 1) of every line's points with fields x, y, z, lane_id, confidence."""
    count = sum(len(line.points) for line in lines)
    records = np.zeros(count, LANE_POINT_DTYPE)
    start = 0
    for index, line in enumerate(lines):
        end = start + len(line.points)
        for axis, name in enumerate("xyz"):
            records[name][start:end] = line.points[:, axis]
        records["lane_id"][start:end] = index
        records["confidence"][start:end] = line.confidence
        start = end
    return PointCloud2(header=header, height=1, width=count, fields=LANE_FIELDS, is_bigendian=False,
                       point_step=LANE_POINT_DTYPE.itemsize, row_step=LANE_POINT_DTYPE.itemsize * count,
                       data=records.tobytes(), is_dense=True)


def detections_3d_message(header: Header, contacts: GroundContacts, scores: np.ndarray, class_ids: np.ndarray,
                          class_names: Sequence[str], camera_position: np.ndarray) -> Detection3DArray:
    """One Detection3D per detection whose contact point is valid.

    ``results[0].pose.pose.position`` is the ground contact point; ``bbox`` is centred above it (half the box's
    height), faces the camera (its x axis points away from it), size (0, width, height); ``id`` is the detection's
    index in the camera's Detection2DArray so the two can be matched.
    """
    detections = []
    for index in np.flatnonzero(contacts.valid):
        x, y, z = (float(v) for v in contacts.points[index])
        detection = Detection3D(header=header, id=str(int(index)))
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = class_names[int(class_ids[index])]
        hypothesis.hypothesis.score = float(scores[index])
        hypothesis.pose.pose.position.x, hypothesis.pose.pose.position.y, hypothesis.pose.pose.position.z = x, y, z
        hypothesis.pose.pose.orientation.w = 1.0
        detection.results = [hypothesis]
        height = float(contacts.height[index]) if np.isfinite(contacts.height[index]) else 0.0
        yaw = float(np.arctan2(y - camera_position[1], x - camera_position[0]))
        qx, qy, qz, qw = quaternion_from_rotation(
            np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]]))
        center = detection.bbox.center
        center.position.x, center.position.y, center.position.z = x, y, z + height / 2
        center.orientation.x, center.orientation.y, center.orientation.z, center.orientation.w = qx, qy, qz, qw
        width = float(contacts.width[index]) if np.isfinite(contacts.width[index]) else 0.0
        detection.bbox.size.x, detection.bbox.size.y, detection.bbox.size.z = 0.0, width, max(height, 0.0)
        detections.append(detection)
    return Detection3DArray(header=header, detections=detections)
