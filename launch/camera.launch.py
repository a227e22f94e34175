"""Run the hybridnets node on a live camera, optionally with rviz2.

    ros2 launch hybridnets_ros camera.launch.py image_topic:=/usb_cam/image_raw weights:=/path/to/hybridnets.pth
    ros2 launch hybridnets_ros camera.launch.py image_topic:=/usb_cam/image_raw rviz:=true

The node is a lifecycle node that activates itself (parameter ``autostart``). ``image_topic`` is remapped onto the
default camera ``camera``: its ``image_raw``, ``image_raw/compressed`` and ``camera_info`` (the sibling
``camera_info`` of ``image_topic``). Outputs stay under ``<namespace>/camera/...``. Arguments left empty keep the
value of ``params_file``.

Every argument is checked before any process starts (hybridnets_ros.ros.launch_checks): a missing ``params_file``,
``rviz:=true`` without rviz2, or a malformed boolean ends the launch with one message, and no node is left running.
``shm_transport:=true`` gives the node (and rviz2) the Fast DDS shared-memory profile config/fastdds_shm.xml; every
process of the pipeline (camera driver, planner, other subscribers) needs the same profile: export
FASTDDS_DEFAULT_PROFILES_FILE=<share>/config/fastdds_shm.xml in their shells.
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_prefix, get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from hybridnets_ros.ground.pose import CameraPoseError, parse_body_pose
from hybridnets_ros.ros.launch_checks import (
    GROUND_ARGUMENTS,
    LaunchArgumentError,
    camera_remappings,
    existing_params_file,
    parse_bool,
    process_environment,
    require_rviz2,
)

PACKAGE = "hybridnets_ros"
CAMERA = "camera"  # the node's default camera (parameter `cameras`)
# Launch arguments that, when not empty, override the parameter of the same name from params_file.
PARAMETER_ARGUMENTS = ("weights", "device", "backend", "input_qos", "ground_frame")


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
                              description="auto, torch, onnxruntime, openvino or tensorrt; empty = params_file "
                                          "(default: auto)"),
        DeclareLaunchArgument("input_qos", default_value="",
                              description="sensor_data or reliable image subscriptions; empty = params_file "
                                          "(default: sensor_data)"),
        *(DeclareLaunchArgument(name, default_value=default, description=text)
          for name, (default, text) in GROUND_ARGUMENTS.items()),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "hybridnets.yaml"),
                              description="node parameters (yaml with /**: ros__parameters:)"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and of all its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (true for bag replay with `ros2 bag play --clock`)"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="also start rviz2 with config/hybridnets.rviz"),
        DeclareLaunchArgument("shm_transport", default_value="false",
                              description="true: the processes of this launch use the Fast DDS shared-memory profile "
                                          "config/fastdds_shm.xml (FASTDDS_DEFAULT_PROFILES_FILE), so large frames "
                                          "are not lost in UDP fragments; every process of the pipeline (camera "
                                          "driver, planner, rviz2) needs the same profile"),
    ]


def node_actions(context: LaunchContext, share: str) -> list[object]:
    """The node (and rviz2) with the launch arguments resolved.

    All checks run before the first action is made: an error after the node started would leave it an orphan.
    """
    value = {name: LaunchConfiguration(name).perform(context) for name in (
        "image_topic", "params_file", "namespace", "use_sim_time", "rviz", "shm_transport", "camera_pose",
        *PARAMETER_ARGUMENTS)}
    params_file = existing_params_file(value["params_file"])
    use_sim_time = parse_bool("use_sim_time", value["use_sim_time"])
    rviz = parse_bool("rviz", value["rviz"])
    if rviz:
        require_rviz2(get_package_prefix)
    environment = process_environment(parse_bool("shm_transport", value["shm_transport"]), share)
    overrides: dict[str, object] = {k: value[k] for k in PARAMETER_ARGUMENTS if value[k]}
    overrides["use_sim_time"] = use_sim_time
    try:
        camera_pose = parse_body_pose(value["camera_pose"])
    except CameraPoseError as exc:
        raise LaunchArgumentError(f"camera_pose:='{value['camera_pose']}': {exc}") from exc
    if camera_pose:
        overrides[f"{CAMERA}.camera_pose"] = camera_pose
    actions: list[object] = [LifecycleNode(
        package=PACKAGE,
        executable="hybridnets_node",
        name="hybridnets",
        namespace=value["namespace"],
        parameters=[params_file, overrides],
        remappings=camera_remappings(CAMERA, value["image_topic"]),
        additional_env=environment,
        # Nothing of this launch (rviz2, a bag player) is of use without the node.
        on_exit=[Shutdown(reason="the hybridnets node exited")],
        output="screen",
    )]
    if rviz:
        actions.append(Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            namespace=value["namespace"],
            arguments=["-d", os.path.join(share, "config", "hybridnets.rviz")],
            parameters=[{"use_sim_time": use_sim_time}],
            additional_env=environment,
            output="screen",
        ))
    return actions


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        *launch_arguments(share),
        OpaqueFunction(function=node_actions, kwargs={"share": share}),
    ])
