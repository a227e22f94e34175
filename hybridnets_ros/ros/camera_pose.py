"""Where each camera is relative to the ground frame, from the best source this machine has.

1. TF, through tf2_ros, wherever it is importable (every ROS install): the transform ground_frame <- the image's
   ``header.frame_id`` at the image stamp (the latest one for static transforms).
2. On a pip-only install, where tf2_ros does not exist: the ``/tf_static`` messages (tf2_msgs/TFMessage), chained
   from the image's frame up to ground_frame. Moving (``/tf``) transforms need tf2_ros.
3. The camera's ``C.camera_pose`` parameter ``[x, y, z, roll, pitch, yaw]`` when no transform is available.
"""
from __future__ import annotations

import threading
from typing import Any

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time

from hybridnets_ros.ground.pose import CameraPose, CameraPoseError, compose, pose_from_transform

TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
MAX_CHAIN = 64  # frames between an image and the ground frame; more means a loop in the tree


def _transform_pose(transform: Any, source: str) -> CameraPose:
    """geometry_msgs/Transform -> pose of the child frame in the parent frame."""
    t, q = transform.translation, transform.rotation
    return pose_from_transform((t.x, t.y, t.z), (q.x, q.y, q.z, q.w), source)


class StaticTransforms:
    """The static transform tree from /tf_static messages (latest per child frame); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parents: dict[str, tuple[str, CameraPose]] = {}

    def add(self, message: Any) -> None:
        """Take every transform of a tf2_msgs/TFMessage (a bad one is skipped: it cannot be used anyway)."""
        with self._lock:
            for stamped in message.transforms:
                try:
                    pose = _transform_pose(stamped.transform, "/tf_static")
                except CameraPoseError:
                    continue
                self._parents[stamped.child_frame_id.lstrip("/")] = (stamped.header.frame_id.lstrip("/"), pose)

    def lookup(self, target: str, frame: str) -> CameraPose | None:
        """Pose of ``frame`` in ``target`` through the tree, or None when they are not connected."""
        with self._lock:
            pose: CameraPose | None = None
            current = frame
            for _ in range(MAX_CHAIN):
                if current == target:
                    return pose  # None when frame is the target itself: an image cannot be taken in the ground frame
                if current not in self._parents:
                    return None
                parent, step = self._parents[current]
                pose = step if pose is None else compose(step, pose)
                current = parent
            return None


class PoseSource:
    """Camera poses for the ground outputs; ``describe(camera)`` says which source gave the last one."""

    def __init__(self, node: Any, ground_frame: str, parameter_poses: dict[str, CameraPose | None]) -> None:
        self._ground_frame = ground_frame
        self._parameter_poses = parameter_poses
        self._used: dict[str, str] = {}
        self._buffer: Any = None
        self._listener: Any = None
        self._static: StaticTransforms | None = None
        self._subscription: Any = None
        self.tf_kind = "none"
        try:
            import tf2_ros  # present in every ROS install; never on a pip-only one
        except ImportError:
            tf2_ros = None
        if tf2_ros is not None:
            self._buffer = tf2_ros.Buffer()
            self._listener = tf2_ros.TransformListener(self._buffer, node)
            self.tf_kind = "tf2_ros"
            return
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:  # neither: only the parameters can give poses
            return
        self._static = StaticTransforms()
        self._subscription = node.create_subscription(TFMessage, "/tf_static", self._static.add, TF_STATIC_QOS)
        self.tf_kind = "/tf_static"

    def close(self, node: Any) -> None:
        """Drop the TF subscriptions (the node is being deactivated)."""
        if self._subscription is not None:
            node.destroy_subscription(self._subscription)
            self._subscription = None
        if self._listener is not None:
            self._listener.unregister()
            self._listener = None

    def pose(self, camera: str, frame_id: str, stamp: Any) -> CameraPose | None:
        """Pose of the image's optical frame ``frame_id`` in the ground frame at ``stamp``; None when unknown."""
        frame_id = frame_id.lstrip("/")
        pose = self._from_tf(frame_id, stamp) if frame_id else None
        if pose is None:
            pose = self._parameter_poses.get(camera)
        self._used[camera] = pose.source if pose is not None else "none"
        return pose

    def describe(self, camera: str) -> str:
        return self._used.get(camera, "not yet needed")

    def _from_tf(self, frame_id: str, stamp: Any) -> CameraPose | None:
        if self._static is not None:
            pose = self._static.lookup(self._ground_frame, frame_id)
            return None if pose is None else CameraPose(pose.rotation, pose.position,
                                                        f"/tf_static ({self._ground_frame} <- {frame_id})")
        if self._buffer is None:
            return None
        for when in (Time.from_msg(stamp), Time()):  # at the stamp; else the latest (static transforms)
            try:
                transform = self._buffer.lookup_transform(self._ground_frame, frame_id, when)
            except Exception:  # tf2 raises one of several lookup/extrapolation errors: all mean "not known"
                continue
            try:
                return _transform_pose(transform.transform, f"tf ({self._ground_frame} <- {frame_id})")
            except CameraPoseError:
                return None
        return None
