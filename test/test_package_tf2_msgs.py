"""tf2_msgs bindings (TFMessage, read from /tf_static on a pip-only install): present and wire-compatible upstream.

On machines without ROS they come from msg/tf2_msgs (built by `make setup`); with ROS, from the distribution.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from rclpy.serialization import serialize_message
from rosbags.typesys import Stores, get_typestore

tf2_msgs_msg = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not installed: run `make setup`")


def _installed_description() -> dict:
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        path = Path(prefix) / "share" / "tf2_msgs" / "msg" / "TFMessage.json"
        if path.is_file():
            return json.loads(path.read_text())
    pytest.skip("this tf2_msgs has no type descriptions (ROS 2 before Iron has no type hashes)")


def test_compiled_type_hash_is_the_upstream_one() -> None:
    # rosbags ships the upstream Jazzy definitions, so its hash is the one every ROS 2 install computes.
    upstream = get_typestore(Stores.ROS2_JAZZY).hash_rihs01("tf2_msgs/msg/TFMessage")
    hashes = {e["type_name"]: e["hash_string"] for e in _installed_description()["type_hashes"]}
    assert hashes["tf2_msgs/msg/TFMessage"] == upstream


def test_serialised_message_is_read_by_the_upstream_definition() -> None:
    message = tf2_msgs_msg.TFMessage()
    from geometry_msgs.msg import TransformStamped

    transform = TransformStamped()
    transform.header.frame_id = "base_footprint"
    transform.child_frame_id = "camera_optical_frame"
    transform.transform.translation.z = 1.5
    transform.transform.rotation.w = 1.0
    message.transforms = [transform]
    decoded = get_typestore(Stores.ROS2_JAZZY).deserialize_cdr(serialize_message(message), "tf2_msgs/msg/TFMessage")
    (got,) = decoded.transforms
    assert (got.header.frame_id, got.child_frame_id) == ("base_footprint", "camera_optical_frame")
    assert (got.transform.translation.z, got.transform.rotation.w) == (1.5, 1.0)
