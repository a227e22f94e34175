"""The node's parameters: config/hybridnets.yaml is their single source of defaults, each is documented, bad values
are rejected with a reason. The node is built in this process (no model is loaded before configure)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import rclpy
import yaml
from rclpy.context import Context
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from hybridnets_ros.ros import node as node_module
from hybridnets_ros.ros.node import HybridNetsNode
from hybridnets_ros.testing.environment import dds_environment

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / "config" / "hybridnets.yaml"


def _yaml_parameters() -> dict:
    data = yaml.safe_load(YAML.read_text())
    assert list(data) == ["/**"], "the parameters must apply to the node under any namespace and name"
    return data["/**"]["ros__parameters"]


@pytest.fixture
def node(ros_env: dict[str, str]) -> Iterator[HybridNetsNode]:
    context = Context()
    with dds_environment(ros_env):
        rclpy.init(context=context, domain_id=int(ros_env["ROS_DOMAIN_ID"]),
                   signal_handler_options=SignalHandlerOptions.NO)
        instance = HybridNetsNode(context=context, start_parameter_services=False)
    try:
        yield instance
    finally:
        instance.destroy_node()
        rclpy.try_shutdown(context=context)


def test_yaml_lists_exactly_the_declared_parameters_with_the_code_defaults() -> None:
    assert _yaml_parameters() == node_module.PARAMETER_DEFAULTS


def test_every_yaml_parameter_has_a_comment() -> None:
    lines = YAML.read_text().splitlines()
    for name in node_module.PARAMETER_DEFAULTS:
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
        assert lines[index - 1].strip().startswith("#"), f"{name} has no comment line above it"


def test_node_declares_the_yaml_defaults_with_descriptions(node: HybridNetsNode) -> None:
    for name, value in _yaml_parameters().items():
        assert node.get_parameter(name).value == value, name
        descriptor = node.describe_parameter(name)
        assert len(descriptor.description) > 20, f"{name} needs a description"
    assert node.has_parameter("camera.transport")  # per-camera override of the default camera


def test_thresholds_have_ranges(node: HybridNetsNode) -> None:
    assert node.describe_parameter("score_threshold").floating_point_range[0].to_value == 1.0
    assert node.describe_parameter("max_detections").integer_range[0].from_value == 1


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("score_threshold", 1.5, ""),  # rclpy's range check gives its own reason
        ("nms_iou_threshold", -0.1, ""),
        ("max_detections", 0, ""),
        ("precision", "fp8", "precision must be one of auto, fp32, fp16, int8"),
        ("backend", "tflite", "backend must be one of"),
        ("device", "gpu0", "device must be auto, cpu, cuda or cuda:N"),
        ("cameras", ["front", "front"], "unique"),
        ("cameras", ["bad name"], "relative topic names"),
        ("transport", "theora", "transport must be one of raw, compressed"),
        ("input_qos", "fast", "input_qos must be one of"),
        ("camera.transport", "h264", "camera.transport must be raw, compressed or empty"),
    ],
)
def test_bad_values_are_rejected_with_a_reason(node: HybridNetsNode, name: str, value: object, reason: str) -> None:
    before = node.get_parameter(name).value
    result = node.set_parameters([Parameter(name, value=value)])[0]
    assert not result.successful
    assert reason in result.reason and result.reason
    assert node.get_parameter(name).value == before


def test_good_values_are_accepted(node: HybridNetsNode) -> None:
    results = node.set_parameters([
        Parameter("score_threshold", value=0.5), Parameter("max_detections", value=7),
        Parameter("device", value="cuda:1"), Parameter("cameras", value=["front", "rear/left"]),
    ])
    assert all(r.successful for r in results)
    assert node.get_parameter("score_threshold").value == 0.5


def test_camera_transport_parameter_name() -> None:
    assert node_module.camera_transport_parameter("rear/left") == "rear.left.transport"


def test_segmentation_classes_for_the_mask_topics() -> None:
    assert node_module.seg_class_id(["road", "lane"], node_module.DRIVABLE_NAMES) == 1
    assert node_module.seg_class_id(["road", "lane"], node_module.LANE_NAMES) == 2
    assert node_module.seg_class_id(["sky"], node_module.LANE_NAMES) is None
