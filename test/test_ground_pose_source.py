"""Where the ground outputs take a camera's pose from (hybridnets_ros.ros.camera_pose.PoseSource): TF through tf2_ros
where it is importable (every ROS 2 install), else the /tf_static messages, else the ``C.camera_pose`` parameter.

Real rclpy nodes in this process, on a DDS domain of their own; transforms are published as a robot's
static_transform_publisher and tf broadcasters do (tf2_msgs/TFMessage on /tf_static, latched, and on /tf). The first
test runs on whichever TF path this install has; the moving-transform test needs tf2_ros and skips without it.
"""
from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from hybridnets_ros.ground.pose import CameraPose, pose_from_body, quaternion_from_rotation
from hybridnets_ros.ros.camera_pose import PoseSource

tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not installed: run `make setup`")

HAS_TF2_ROS = importlib.util.find_spec("tf2_ros") is not None
GROUND, OPTICAL = "base_footprint", "cam_optical"
PARAMETER_POSE = pose_from_body([0.0, 0.0, 1.5, 0.0, 0.0, 0.0])
WAIT_S = 30.0
LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture
def nodes(ros_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:
    """(node holding the PoseSource, node publishing transforms, executor spinning both) on the isolated domain."""
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOG_DIR", "RMW_IMPLEMENTATION"):
        monkeypatch.setenv(key, ros_env[key])
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    consumer = rclpy.create_node("pose_consumer", context=context)
    publisher = rclpy.create_node("pose_publisher", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(consumer)
    executor.add_node(publisher)
    try:
        yield consumer, publisher, executor
    finally:
        executor.shutdown()
        consumer.destroy_node()
        publisher.destroy_node()
        rclpy.try_shutdown(context=context)


def _spin_until(executor: SingleThreadedExecutor, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S:.0f} s"
        executor.spin_once(timeout_sec=0.05)


def _stamped(pose: CameraPose, seconds: int = 0) -> TransformStamped:
    """The transform ground <- optical that places the optical frame at ``pose``, stamped ``seconds``."""
    transform = TransformStamped()
    transform.header.frame_id, transform.child_frame_id = GROUND, OPTICAL
    transform.header.stamp.sec = seconds
    t = transform.transform
    t.translation.x, t.translation.y, t.translation.z = (float(v) for v in pose.position)
    t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w = quaternion_from_rotation(pose.rotation)
    return transform


def _stamp(seconds: float) -> object:
    return rclpy.time.Time(nanoseconds=int(seconds * 1e9)).to_msg()


def test_pose_comes_from_the_tf_this_install_has(nodes) -> None:
    consumer, publisher, executor = nodes
    source = PoseSource(consumer, GROUND, {"cam": PARAMETER_POSE})
    assert source.tf_kind == ("tf2_ros" if HAS_TF2_ROS else "/tf_static")
    mounted = pose_from_body([1.2, -0.3, 1.4, np.deg2rad(2.0), np.deg2rad(5.0), np.deg2rad(-1.0)])
    # Before any transform: the parameter.
    assert source.pose("cam", OPTICAL, _stamp(5.0)) is PARAMETER_POSE
    publisher.create_publisher(tf2_msgs.TFMessage, "/tf_static", LATCHED).publish(
        tf2_msgs.TFMessage(transforms=[_stamped(mounted)]))
    _spin_until(executor, lambda: source.pose("cam", OPTICAL, _stamp(5.0)) is not PARAMETER_POSE,
                "pose from the published static transform")
    pose = source.pose("cam", OPTICAL, _stamp(5.0))
    assert np.allclose(pose.rotation, mounted.rotation, atol=1e-9)
    assert np.allclose(pose.position, mounted.position, atol=1e-9)
    kind = "tf" if HAS_TF2_ROS else "/tf_static"
    assert pose.source == f"{kind} ({GROUND} <- {OPTICAL})" and source.describe("cam") == pose.source
    # A frame TF does not know falls back to the parameter; a camera without one has no pose.
    assert source.pose("cam", "other_optical", _stamp(5.0)) is PARAMETER_POSE
    assert source.pose("no_parameter", "other_optical", _stamp(5.0)) is None
    source.close(consumer)


@pytest.mark.skipif(not HAS_TF2_ROS, reason="tf2_ros is only in ROS 2 installs (not on PyPI): moving transforms on "
                                            "/tf need it; a pip-only install uses /tf_static (tested above)")
def test_moving_camera_pose_is_looked_up_at_the_image_stamp(nodes) -> None:
    consumer, publisher, executor = nodes
    source = PoseSource(consumer, GROUND, {})
    low, high = pose_from_body([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]), pose_from_body([0.0, 0.0, 2.0, 0.0, 0.0, 0.0])
    tf = publisher.create_publisher(tf2_msgs.TFMessage, "/tf", 100)
    _spin_until(executor, lambda: tf.get_subscription_count() > 0, "TF listener")
    tf.publish(tf2_msgs.TFMessage(transforms=[_stamped(low, 10)]))
    tf.publish(tf2_msgs.TFMessage(transforms=[_stamped(high, 12)]))
    _spin_until(executor, lambda: source.pose("cam", OPTICAL, _stamp(11.0)) is not None, "pose from /tf")
    assert source.pose("cam", OPTICAL, _stamp(11.0)).position[2] == pytest.approx(1.5, abs=1e-9)
    assert source.pose("cam", OPTICAL, _stamp(10.0)).position[2] == pytest.approx(1.0, abs=1e-9)
    source.close(consumer)
