"""vision_msgs bindings: present, and wire-compatible with the upstream vision_msgs 4.x package.

On machines without ROS they come from msg/vision_msgs (built by `make setup`); with ROS, from the distribution.
Either way the type hashes must be the upstream ones, or a real ROS 2 install would not talk to the node.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message

vision_msgs_msg = pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not installed: run `make setup`")

from hybridnets_ros.ros.bag import ensure_types, typestore  # noqa: E402

# RIHS01 hashes of the upstream vision_msgs 4.x messages, as compiled into a ROS 2 build of ros-perception/vision_msgs.
UPSTREAM_HASHES = {
    "Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
}
MESSAGES = [
    "Point2D", "Pose2D", "BoundingBox2D", "ObjectHypothesis", "ObjectHypothesisWithPose", "Detection2D",
    "Detection2DArray", "VisionClass", "LabelInfo", "BoundingBox3D", "Detection3D", "Detection3DArray",
]


def _installed_share() -> Path:
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        share = Path(prefix) / "share" / "vision_msgs" / "msg"
        if share.is_dir():
            return share
    pytest.fail(f"vision_msgs is importable but has no share/vision_msgs/msg under {prefixes}")


def test_every_message_the_project_uses_is_importable() -> None:
    missing = [name for name in MESSAGES if not hasattr(vision_msgs_msg, name)]
    assert not missing, f"vision_msgs lacks {missing}"


@pytest.mark.parametrize("name", sorted(UPSTREAM_HASHES))
def test_compiled_type_hash_is_upstream(name: str) -> None:
    path = _installed_share() / f"{name}.json"
    if not path.is_file():
        pytest.skip("this vision_msgs has no type descriptions (ROS 2 before Iron has no type hashes)")
    description = json.loads(path.read_text())
    hashes = {entry["type_name"]: entry["hash_string"] for entry in description["type_hashes"]}
    assert hashes[f"vision_msgs/msg/{name}"] == UPSTREAM_HASHES[name]


@pytest.mark.parametrize("name", sorted(UPSTREAM_HASHES))
def test_rosbags_hash_from_installed_definitions_is_upstream(name: str) -> None:
    # The bag recorder registers vision_msgs from the installed .msg files; its bags must carry the same hash.
    store = typestore()
    ensure_types(store, [f"vision_msgs/msg/{name}"])
    assert store.hash_rihs01(f"vision_msgs/msg/{name}") == UPSTREAM_HASHES[name]


def test_detection_array_cdr_is_read_identically_by_rosbags() -> None:
    m = vision_msgs_msg
    detection = m.Detection2D(id="7")
    detection.header.frame_id = "cam"
    detection.bbox.center.position.x = 12.5
    detection.bbox.center.position.y = -3.25
    detection.bbox.center.theta = 0.5
    detection.bbox.size_x = 40.0
    detection.bbox.size_y = 20.0
    hypothesis = m.ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id = "car"
    hypothesis.hypothesis.score = 0.875
    hypothesis.pose.pose.position.z = 2.0
    detection.results = [hypothesis]
    array = m.Detection2DArray(detections=[detection])
    array.header.stamp.sec = 42

    store = typestore()
    ensure_types(store, ["vision_msgs/msg/Detection2DArray"])
    decoded = store.deserialize_cdr(serialize_message(array), "vision_msgs/msg/Detection2DArray")

    assert decoded.header.stamp.sec == 42
    (got,) = decoded.detections
    assert (got.id, got.header.frame_id) == ("7", "cam")
    assert (got.bbox.center.position.x, got.bbox.center.position.y, got.bbox.center.theta) == (12.5, -3.25, 0.5)
    assert (got.bbox.size_x, got.bbox.size_y) == (40.0, 20.0)
    assert (got.results[0].hypothesis.class_id, got.results[0].hypothesis.score) == ("car", 0.875)
    assert got.results[0].pose.pose.position.z == 2.0


def test_label_info_round_trips_from_rosbags_to_rclpy() -> None:
    store = typestore()
    ensure_types(store, ["vision_msgs/msg/LabelInfo"])
    types = store.types
    label_info = types["vision_msgs/msg/LabelInfo"](
        header=types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=2),
                                            frame_id="cam"),
        class_map=[types["vision_msgs/msg/VisionClass"](class_id=np.uint16(300), class_name="car")],
        threshold=np.float32(0.25),
    )
    decoded = deserialize_message(bytes(store.serialize_cdr(label_info, "vision_msgs/msg/LabelInfo")),
                                  vision_msgs_msg.LabelInfo)
    assert [(c.class_id, c.class_name) for c in decoded.class_map] == [(300, "car")]
    assert decoded.threshold == pytest.approx(0.25)
    assert (decoded.header.stamp.sec, decoded.header.stamp.nanosec, decoded.header.frame_id) == (1, 2, "cam")
