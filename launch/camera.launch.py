"""Run the hybridnets node on a live camera, optionally with rviz2.

    ros2 launch hybridnets_ros camera.launch.py image_topic:=/usb_cam/image_raw weights:=/path/to/hybridnets.pth
    ros2 launch hybridnets_ros camera.launch.py image_topic:=/usb_cam/image_raw rviz:=true

The node is a lifecycle node that activates itself (parameter ``autostart``). ``image_topic`` is remapped onto the
default camera ``camera``: its ``image_raw``, ``image_raw/compressed`` and ``camera_info`` (the sibling
``camera_info`` of ``image_topic``). Outputs stay under ``<namespace>/camera/...``. Arguments left empty keep the
value of ``params_file``.
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

PACKAGE = "hybridnets_ros"
CAMERA = "camera"  # the node's default camera (parameter `cameras`)
# Launch arguments that, when not empty, override the parameter of the same name from params_file.
PARAMETER_ARGUMENTS = ("weights", "device", "backend", "input_qos")


def launch_arguments(share: str) -> list[DeclareLaunchArgument]:
    """The arguments of this file (replay.launch.py forwards them)."""
    return [
        DeclareLaunchArgument("image_topic", default_value=f"{CAMERA}/image_raw",
                              description="camera image topic (sensor_msgs/Image), remapped onto the node's "
                                          "camera/image_raw; its sibling camera_info is remapped as well"),
        DeclareLaunchArgument("weights", default_value="",
                              description="HybridNets checkpoint (.pt), e.g. the official hybridnets.pth; "
                                          "empty = params_file (default: the bundled model)"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto, cpu, cuda or cuda:N; empty = params_file (default: auto)"),
        DeclareLaunchArgument("backend", default_value="",
                              description="torch, onnxruntime, openvino or tensorrt; empty = params_file "
                                          "(default: torch)"),
        DeclareLaunchArgument("input_qos", default_value="",
                              description="sensor_data or reliable image subscriptions; empty = params_file "
                                          "(default: sensor_data)"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "hybridnets.yaml"),
                              description="node parameters (yaml with /**: ros__parameters:)"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and of all its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (true for bag replay with `ros2 bag play --clock`)"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="also start rviz2 with config/hybridnets.rviz"),
    ]


def _is_true(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes", "on")


def _sibling(topic: str, name: str) -> str:
    """``/usb_cam/image_raw`` -> ``/usb_cam/<name>``."""
    head, _, _ = topic.rpartition("/")
    return f"{head}/{name}" if head or topic.startswith("/") else name


def node_actions(context: LaunchContext, share: str) -> list[object]:
    """The node (and rviz2) with the launch arguments resolved."""
    value = {name: LaunchConfiguration(name).perform(context) for name in (
        "image_topic", "params_file", "namespace", "use_sim_time", "rviz", *PARAMETER_ARGUMENTS)}
    overrides: dict[str, object] = {k: value[k] for k in PARAMETER_ARGUMENTS if value[k]}
    overrides["use_sim_time"] = _is_true(value["use_sim_time"])
    image_topic = value["image_topic"]
    remappings = [
        (f"{CAMERA}/image_raw", image_topic),
        (f"{CAMERA}/image_raw/compressed", f"{image_topic}/compressed"),
        (f"{CAMERA}/camera_info", _sibling(image_topic, "camera_info")),
    ]
    actions: list[object] = [LifecycleNode(
        package=PACKAGE,
        executable="hybridnets_node",
        name="hybridnets",
        namespace=value["namespace"],
        parameters=[value["params_file"], overrides],
        remappings=remappings,
        output="screen",
    )]
    if _is_true(value["rviz"]):
        actions.append(Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            namespace=value["namespace"],
            arguments=["-d", os.path.join(share, "config", "hybridnets.rviz")],
            parameters=[{"use_sim_time": overrides["use_sim_time"]}],
            output="screen",
        ))
    return actions


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        *launch_arguments(share),
        OpaqueFunction(function=node_actions, kwargs={"share": share}),
    ])
