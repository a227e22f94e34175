"""Run the hybridnets node on a recorded bag, on the bag's time.

    ros2 launch hybridnets_ros replay.launch.py bag:=/data/drive_bag image_topic:=/front/image_raw
    ros2 launch hybridnets_ros replay.launch.py bag:=/data/drive_bag image_topic:=/front/image_raw rviz:=true

Starts the node with ``use_sim_time`` (default true) and reliable image subscriptions (a player offers reliable;
nothing is lost to the transport), and plays ``bag`` with ``ros2 bag play --clock`` (so ``/clock`` carries the
bag's time) once the node reports the lifecycle state ``active``: its model is loaded, so no frame of the bag is
lost however long loading takes. Every output carries the stamp of the bag message it was computed from. Leave
``bag`` empty to play it yourself (``ros2 bag play --clock <bag>`` in another shell). The arguments of
camera.launch.py apply (``ground_frame:=`` and ``camera_pose:=`` for the ground-plane outputs too) and are checked
before anything starts (a missing ``bag`` too); ``shm_transport:=true`` gives the player the node's shared-memory
profile as well.
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.event_handlers import OnStateTransition

from hybridnets_ros.ros.launch_checks import GROUND_ARGUMENTS, bag_play_command, parse_bool, process_environment

PACKAGE = "hybridnets_ros"
# camera.launch.py arguments passed through (use_sim_time and input_qos with this file's defaults).
FORWARDED = ("image_topic", "weights", "device", "backend", "params_file", "namespace", "rviz", "use_sim_time",
             "input_qos", "shm_transport", *GROUND_ARGUMENTS)


def player_on_active(context: LaunchContext, share: str) -> list[object]:
    """``ros2 bag play`` started when the node reaches ``active`` (once); nothing when ``bag`` is empty.

    The bag and rate are checked here, before camera.launch.py starts the node.
    """
    bag = LaunchConfiguration("bag").perform(context)
    if not bag:
        return []
    command = bag_play_command(bag, LaunchConfiguration("rate").perform(context))
    shm_transport = parse_bool("shm_transport", LaunchConfiguration("shm_transport").perform(context))
    environment = process_environment(shm_transport, share)
    return [RegisterEventHandler(OnStateTransition(
        goal_state="active",
        entities=[ExecuteProcess(cmd=command, additional_env=environment, output="screen")],
        handle_once=True,
    ))]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    camera_launch = os.path.join(share, "launch", "camera.launch.py")
    arguments = [
        DeclareLaunchArgument("bag", default_value="",
                              description="rosbag2 folder or file to play with --clock; empty = play it yourself"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate of the bag"),
        DeclareLaunchArgument("use_sim_time", default_value="true",
                              description="node (and rviz2) on the bag's /clock; false: on the wall clock"),
        DeclareLaunchArgument("input_qos", default_value="reliable",
                              description="image subscription QoS (reliable: no frame of the bag lost in transport)"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="image topic recorded in the bag, remapped onto the node's camera"),
        DeclareLaunchArgument("weights", default_value="", description="HybridNets checkpoint; empty = params_file"),
        DeclareLaunchArgument("device", default_value="", description="auto, cpu, cuda or cuda:N; empty = params_file"),
        DeclareLaunchArgument("backend", default_value="", description="inference backend; empty = params_file (auto)"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "hybridnets.yaml"),
                              description="node parameters"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start rviz2"),
        *(DeclareLaunchArgument(name, default_value=default, description=text)
          for name, (default, text) in GROUND_ARGUMENTS.items()),
        DeclareLaunchArgument("shm_transport", default_value="false",
                              description="true: node and player use the Fast DDS shared-memory profile "
                                          "config/fastdds_shm.xml; every process of the pipeline needs the same "
                                          "profile"),
    ]
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(camera_launch),
        launch_arguments=[(name, LaunchConfiguration(name)) for name in FORWARDED],
    )
    # The handler is registered before the include starts the node, so the transition to active cannot be missed.
    player = OpaqueFunction(function=player_on_active, kwargs={"share": share})
    return LaunchDescription([*arguments, player, node])
