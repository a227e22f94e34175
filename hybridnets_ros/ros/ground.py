"""The node's ground-plane outputs: per camera, the segmentation and detections placed on the road in metres.

Topics per camera C (all stamped with the input image's stamp, frame ``ground_frame``, except the confidence image
which keeps the input header; each is built only while someone subscribes):

- ``C/ground/points`` PointCloud2, organised, width x height of ``C/segmentation``, x y z (NaN where no ground)
- ``C/segmentation/confidence`` Image mono8, 0-255 probability of the class ``C/segmentation`` shows
- ``C/drivable_area/grid`` OccupancyGrid (0 seen drivable, 100 seen not drivable, -1 not seen)
- ``C/lane_lines/polylines`` MarkerArray, one LINE_STRIP per lane line, left to right
- ``C/lane_lines/points`` PointCloud2 of the same lines: x y z lane_id confidence
- ``C/detections_3d`` Detection3DArray, each detection's ground contact point (box bottom refined by the drivable mask)

The geometry needs ``C/camera_info`` and the camera's pose (see :mod:`hybridnets_ros.ros.camera_pose`); without
either the image outputs go on and one rate-limited warning names the camera and what is missing.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from nav_msgs.msg import OccupancyGrid
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import MarkerArray

from hybridnets_ros.ground.camera import CameraModelError, camera_model
from hybridnets_ros.ground.contacts import contact_rows, ground_contacts
from hybridnets_ros.ground.grid import GridSpec, occupancy
from hybridnets_ros.ground.lanes import LaneSpec, lane_polylines
from hybridnets_ros.ground.pose import CameraPose, CameraPoseError, pose_from_body
from hybridnets_ros.ground.projector import GroundGeometryError, GroundProjector, ProjectorCache
from hybridnets_ros.ros import conversions, ground_messages
from hybridnets_ros.ros.camera_pose import PoseSource

GROUND_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
RANGE_PARAMETERS = ("ground.x_range", "ground.y_range")


def camera_pose_parameter(camera: str) -> str:
    """Name of a camera's pose parameter (``front/left`` -> ``front.left.camera_pose``)."""
    return f"{camera.replace('/', '.')}.camera_pose"


def validate_parameter(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for a ground parameter (None when it is, or when ``name`` is not one)."""
    if name in RANGE_PARAMETERS:
        if len(value) != 2 or not all(math.isfinite(v) for v in value) or not value[0] < value[1]:
            return f"{name} must be [min, max] in metres with min < max, got {list(value)}"
    if name == "ground_frame" and not value.strip("/"):
        return "ground_frame must name a TF frame (e.g. base_footprint), got an empty string"
    if name.endswith(".camera_pose") and len(value):
        try:
            pose_from_body(value)
        except CameraPoseError as exc:
            return f"{name}: {exc} (or [] for none)"
    return None


@dataclass(frozen=True)
class GroundSettings:
    """The ground parameters, read at configure."""

    ground_frame: str
    resolution: float
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    max_range: float

    @property
    def grid(self) -> GridSpec:
        return GridSpec(self.resolution, *self.x_range, *self.y_range)

    @property
    def lanes(self) -> LaneSpec:
        return LaneSpec(*self.x_range, *self.y_range)


@dataclass
class GroundPublishers:
    """One camera's ground-output publishers."""

    points: Any
    confidence: Any
    grid: Any | None
    polylines: Any | None
    lane_points: Any | None
    detections_3d: Any

    def all(self) -> list[Any]:
        return [p for p in (self.points, self.confidence, self.grid, self.polylines, self.lane_points,
                            self.detections_3d) if p is not None]


def lane_points(projector: GroundProjector, result: Any, lane_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground points (N,3) of a FrameResult's lane pixels that see the ground, and their confidences (N,) 0-1."""
    top = projector.first_row
    width = projector.camera.size[0]
    below = np.flatnonzero((result.seg_mask[top:] == lane_id) & projector.valid[top:])
    index = below + top * width
    points = projector.points.reshape(-1, 3)[index]
    if result.seg_confidence is None:
        return points, np.ones(len(index))
    return points, result.seg_confidence.at(index)


def camera_info_key(info: CameraInfo) -> tuple:
    """The CameraInfo fields the geometry depends on, hashable."""
    roi = info.roi
    return (info.width, info.height, info.distortion_model, tuple(info.k), tuple(info.d), info.binning_x,
            info.binning_y, roi.x_offset, roi.y_offset, roi.width, roi.height)


class GroundOutputs:
    """Publishers, pose source and per-camera geometry cache of the ground outputs of one configured node."""

    def __init__(self, node: Any, pub: Callable[[type, str, QoSProfile], Any], cameras: Sequence[str],
                 settings: GroundSettings, parameter_poses: dict[str, CameraPose | None],
                 camera_infos: dict[str, CameraInfo], class_names: Sequence[str], drivable_id: int | None,
                 lane_id: int | None, warnings: Any) -> None:
        self._node = node
        self._settings = settings
        self._camera_infos = camera_infos  # the node's: filled by its camera_info subscriptions
        self._class_names = list(class_names)
        self._drivable_id = drivable_id
        self._lane_id = lane_id
        self._warnings = warnings
        self._caches = {camera: ProjectorCache() for camera in cameras}
        self._clouds: dict[str, tuple[GroundProjector, bytes]] = {}
        self._failed: dict[str, tuple[tuple, str]] = {}  # per camera, the last key that could not be built and why
        self._logged: set[tuple[str, str]] = set()
        self._status = {camera: "waiting for the first frame" for camera in cameras}
        self.publishers = {
            camera: GroundPublishers(
                points=pub(PointCloud2, f"{camera}/ground/points", GROUND_QOS),
                confidence=pub(Image, f"{camera}/segmentation/confidence", GROUND_QOS),
                grid=pub(OccupancyGrid, f"{camera}/drivable_area/grid", GROUND_QOS) if drivable_id else None,
                polylines=pub(MarkerArray, f"{camera}/lane_lines/polylines", GROUND_QOS) if lane_id else None,
                lane_points=pub(PointCloud2, f"{camera}/lane_lines/points", GROUND_QOS) if lane_id else None,
                detections_3d=pub(Detection3DArray, f"{camera}/detections_3d", GROUND_QOS),
            )
            for camera in cameras
        }
        self._poses = PoseSource(node, settings.ground_frame, parameter_poses)
        node.get_logger().info(
            f"ground outputs in frame '{settings.ground_frame}': camera poses from "
            f"{self._poses.tf_kind if self._poses.tf_kind != 'none' else 'no TF (tf2_ros and tf2_msgs missing)'}"
            ", else the C.camera_pose parameters "
            + ", ".join(f"{c}={'set' if p is not None else 'unset'}" for c, p in parameter_poses.items()))

    @classmethod
    def from_node(cls, node: Any, pub: Callable[[type, str, QoSProfile], Any], cameras: Sequence[str],
                  camera_infos: dict[str, CameraInfo], class_names: Sequence[str], drivable_id: int | None,
                  lane_id: int | None, warnings: Any) -> GroundOutputs:
        """Read the ground parameters of ``node`` and create the outputs with its publisher factory ``pub``
        (``camera_infos`` is the node's live map camera -> last CameraInfo; ``warnings`` its WarningLimiter)."""
        value = lambda name: node.get_parameter(name).value  # noqa: E731
        settings = GroundSettings(value("ground_frame").strip("/"), value("ground.resolution"),
                                  tuple(value("ground.x_range")), tuple(value("ground.y_range")),
                                  value("ground.max_range"))
        poses = {c: pose_from_body(value(camera_pose_parameter(c))) if len(value(camera_pose_parameter(c))) else None
                 for c in cameras}
        return cls(node, pub, cameras, settings, poses, camera_infos, class_names, drivable_id, lane_id, warnings)

    def close(self) -> None:
        """Drop the TF subscriptions (the publishers belong to the node, which destroys them)."""
        self._poses.close(self._node)

    def status(self, camera: str) -> str:
        """One line for /diagnostics: the pose source in use, or why there are no ground outputs."""
        return self._status.get(camera, "not configured")

    def publish(self, camera: str, header: Header, result: Any) -> None:
        """Publish the ground outputs of one frame's result (a FrameResult) that have subscribers."""
        publishers = self.publishers[camera]
        if publishers.confidence.get_subscription_count() and result.seg_confidence is not None:
            publishers.confidence.publish(
                conversions.array_to_image(result.seg_confidence.image(), header, "mono8"))
        wanted = [p for p in publishers.all() if p is not publishers.confidence and p.get_subscription_count()]
        if not wanted:
            return
        projector = self._projector(camera, header, result.seg_mask.shape)
        if projector is None:
            return
        ground_header = Header(stamp=header.stamp, frame_id=self._settings.ground_frame)
        if publishers.points.get_subscription_count():
            publishers.points.publish(self._cloud(camera, ground_header, projector))
        # Lane markings lie on the road: drivable for the grid and for where vehicles meet the road.
        drivable = tuple(c for c in (self._drivable_id, self._lane_id) if c is not None)
        if publishers.grid is not None and publishers.grid.get_subscription_count():
            values = occupancy(projector, self._settings.grid, result.seg_mask, drivable, result.detections.boxes)
            publishers.grid.publish(ground_messages.grid_message(ground_header, self._settings.grid, values))
        if any(p is not None and p.get_subscription_count() for p in (publishers.polylines, publishers.lane_points)):
            self._publish_lanes(publishers, ground_header, projector, result)
        if publishers.detections_3d.get_subscription_count():
            det = result.detections
            # Without a drivable class there is no evidence of the road under a vehicle: the box bottoms are used.
            rows = contact_rows(det.boxes, result.seg_mask, drivable) if self._drivable_id is not None else None
            contacts = ground_contacts(projector, det.boxes, rows)
            publishers.detections_3d.publish(ground_messages.detections_3d_message(
                ground_header, contacts, det.scores, det.class_ids, self._class_names, projector.pose.position))

    def _publish_lanes(self, publishers: GroundPublishers, header: Header, projector: GroundProjector,
                       result: Any) -> None:
        lines = lane_polylines(*lane_points(projector, result, self._lane_id), self._settings.lanes)
        if publishers.polylines.get_subscription_count():
            publishers.polylines.publish(ground_messages.lane_markers(header, lines))
        if publishers.lane_points.get_subscription_count():
            publishers.lane_points.publish(ground_messages.lane_points_message(header, lines))

    def _cloud(self, camera: str, header: Header, projector: GroundProjector) -> PointCloud2:
        """The organised cloud; its bytes only change with the geometry, so they are kept per projector."""
        cached = self._clouds.get(camera)
        if cached is None or cached[0] is not projector:
            message = ground_messages.cloud_message(header, projector.points)
            self._clouds[camera] = (projector, bytes(message.data))
            return message
        width, height = projector.camera.size
        return PointCloud2(header=header, height=height, width=width, fields=ground_messages.XYZ_FIELDS,
                           is_bigendian=False, point_step=12, row_step=12 * width, data=cached[1], is_dense=False)

    def _projector(self, camera: str, header: Header, image_hw: tuple[int, int]) -> GroundProjector | None:
        """The camera's ray-to-ground lookup for this image, or None (after a rate-limited warning saying why)."""
        info = self._camera_infos.get(camera)
        if info is None:
            return self._missing(camera, f"no CameraInfo received on {camera}/camera_info (the image's calibration)")
        pose = self._poses.pose(camera, header.frame_id, header.stamp)
        if pose is None:
            return self._missing(
                camera, f"no pose of frame '{header.frame_id}' in '{self._settings.ground_frame}': publish that "
                f"transform on TF, or set the parameter {camera_pose_parameter(camera)}: [x, y, z, roll, pitch, yaw]")
        height, width = image_hw
        key = (camera_info_key(info), (width, height), pose.key(), self._settings.max_range)
        failed = self._failed.get(camera)
        if failed is not None and failed[0] == key:  # not rebuilt every frame: it would fail the same way
            return self._missing(camera, failed[1])
        try:
            projector = self._caches[camera].get(key, lambda: self._build(camera, info, (width, height), pose))
        except (CameraModelError, GroundGeometryError) as exc:
            self._failed[camera] = (key, str(exc))
            return self._missing(camera, str(exc))
        self._status[camera] = f"ok: pose from {pose.source}"
        self._log_once(camera, f"ground outputs: camera pose from {pose.source}")
        return projector

    def _build(self, camera: str, info: CameraInfo, size: tuple[int, int], pose: CameraPose) -> GroundProjector:
        model, note = camera_model(
            k=np.asarray(info.k), d=np.asarray(info.d), distortion_model=info.distortion_model,
            calib_size=(info.width, info.height), image_size=size, binning=(info.binning_x, info.binning_y),
            roi=(info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height))
        if note is not None:
            self._log_once(camera, note)
        # A pose through TF's quaternions differs from the same pose given as numbers in the last bits; rounding far
        # below any physical meaning makes equal poses give bit-identical outputs whichever source they came from.
        canonical = CameraPose(np.round(pose.rotation, 12), np.round(pose.position, 12), pose.source)
        return GroundProjector(model, canonical, self._settings.max_range)

    def _missing(self, camera: str, reason: str) -> None:
        self._status[camera] = f"no ground outputs: {reason}"
        held_back = self._warnings.allow(f"{camera}/ground")
        if held_back is not None:
            more = f" ({held_back} more frames since the last warning)" if held_back else ""
            self._node.get_logger().warning(f"camera '{camera}': no ground outputs: {reason}{more}")
        return None

    def _log_once(self, camera: str, text: str) -> None:
        if (camera, text) not in self._logged:
            self._logged.add((camera, text))
            self._node.get_logger().info(f"camera '{camera}': {text}")
