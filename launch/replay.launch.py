"""Run the hybridnets node on a recorded bag, on the bag's time.

    ros2 launch hybridnets_ros replay.launch.py bag:=/data/drive_bag image_topic:=/front/image_raw
    ros2 launch hybridnets_ros replay.launch.py bag:=/data/drive_bag image_topic:=/front/image_raw rviz:=true

Plays ``bag`` with ``ros2 bag play --clock`` (so ``/clock`` carries the bag's time) and starts the node with
``use_sim_time`` and reliable image subscriptions (a player offers reliable; nothing is lost to the transport).
Every output carries the stamp of the bag message it was computed from. Leave ``bag`` empty to play it yourself
(``ros2 bag play --clock <bag>`` in another shell). All arguments of camera.launch.py apply.
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PythonExpression

PACKAGE = "hybridnets_ros"
# camera.launch.py arguments passed through unchanged (use_sim_time and input_qos are set here).
FORWARDED = ("image_topic", "weights", "device", "backend", "params_file", "namespace", "rviz")


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    camera_launch = os.path.join(share, "launch", "camera.launch.py")
    bag = LaunchConfiguration("bag")
    arguments = [
        DeclareLaunchArgument("bag", default_value="",
                              description="rosbag2 folder or file to play with --clock; empty = play it yourself"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate of the bag"),
        DeclareLaunchArgument("delay", default_value="10.0",
                              description="seconds before playing starts: time for the node to load its model"),
        DeclareLaunchArgument("input_qos", default_value="reliable",
                              description="image subscription QoS (reliable: no frame of the bag lost in transport)"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="image topic recorded in the bag, remapped onto the node's camera"),
        DeclareLaunchArgument("weights", default_value="", description="HybridNets checkpoint; empty = params_file"),
        DeclareLaunchArgument("device", default_value="", description="auto, cpu, cuda or cuda:N; empty = params_file"),
        DeclareLaunchArgument("backend", default_value="", description="inference backend; empty = params_file"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "hybridnets.yaml"),
                              description="node parameters"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start rviz2"),
    ]
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(camera_launch),
        launch_arguments=[(name, LaunchConfiguration(name)) for name in FORWARDED]
        + [("use_sim_time", "true"), ("input_qos", LaunchConfiguration("input_qos"))],
    )
    player = ExecuteProcess(
        cmd=["ros2", "bag", "play", bag, "--clock", "--rate", LaunchConfiguration("rate"),
             "--delay", LaunchConfiguration("delay")],
        output="screen",
        condition=IfCondition(PythonExpression(["'", bag, "' != ''"])),
    )
    return LaunchDescription([*arguments, node, player])
