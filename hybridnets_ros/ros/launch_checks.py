"""The checks and values the launch files resolve before they start anything, in plain Python (no launch imports).

A launch that starts the node and then fails on a later action leaves the node running as an orphan, so the launch
files run every check here first, in their OpaqueFunction, and return actions only when all pass. A failed check
raises :class:`LaunchArgumentError` with one message naming the argument, the value, what is wrong and the remedy;
``ros2 launch`` prints it and exits before any process starts.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import yaml

FASTDDS_PROFILE = os.path.join("config", "fastdds_shm.xml")  # relative to the package's share directory
FASTDDS_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
# The spellings launch's own conditions (IfCondition) accept.
_TRUE, _FALSE = ("true", "1"), ("false", "0")
# The ground-plane arguments of camera.launch.py, which replay.launch.py declares and forwards unchanged:
# name -> (default, description). Empty keeps params_file's value.
GROUND_ARGUMENTS: dict[str, tuple[str, str]] = {
    "ground_frame": ("", "frame of the ground-plane outputs (its z = 0 plane is the road); empty = params_file "
                         "(default: base_footprint)"),
    "camera_pose": ("", "[x, y, z, roll, pitch, yaw] (m, rad) of the camera body (REP 103) in ground_frame, used when "
                        "TF has no transform for the images' frame; empty = params_file / TF only"),
}


class LaunchArgumentError(RuntimeError):
    """A launch argument that cannot work; raised before any action is returned."""


def parse_bool(name: str, text: str) -> bool:
    """``true``/``1`` or ``false``/``0`` (any case), as launch conditions read them; anything else is an error."""
    value = text.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise LaunchArgumentError(f"launch argument {name}:='{text}' is not a boolean: use true or false")


def sibling_topic(topic: str, name: str) -> str:
    """``/usb_cam/image_raw`` -> ``/usb_cam/<name>``; a topic without a parent gives the relative ``<name>``."""
    head, _, _ = topic.rpartition("/")
    return f"{head}/{name}" if head or topic.startswith("/") else name


def camera_remappings(camera: str, image_topic: str) -> list[tuple[str, str]]:
    """Remappings of ``camera``'s raw, compressed and camera_info inputs onto ``image_topic`` and its siblings."""
    return [
        (f"{camera}/image_raw", image_topic),
        (f"{camera}/image_raw/compressed", f"{image_topic}/compressed"),
        (f"{camera}/camera_info", sibling_topic(image_topic, "camera_info")),
    ]


def existing_params_file(path: str) -> str:
    """``path`` when it is a readable YAML file holding a mapping; else an error naming it.

    launch_ros only warns about a missing parameter file and the node then runs on its built-in defaults, which the
    user did not ask for.
    """
    if not path:
        raise LaunchArgumentError("launch argument params_file is empty: give a parameter yaml "
                                  "(default: the installed config/hybridnets.yaml)")
    file = Path(path).expanduser()
    if not file.exists():
        raise LaunchArgumentError(f"params_file '{path}' does not exist: give an existing parameter yaml "
                                  "(e.g. a copy of the installed config/hybridnets.yaml)")
    if file.is_dir():
        raise LaunchArgumentError(f"params_file '{path}' is a directory: give the parameter yaml file in it")
    try:
        content = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise LaunchArgumentError(f"params_file '{path}' cannot be read as YAML ({error}): "
                                  "fix or replace the file") from error
    if not isinstance(content, dict):
        raise LaunchArgumentError(f"params_file '{path}' holds no parameters (expected '/**: ros__parameters: ...' "
                                  "or '<node name>: ros__parameters: ...')")
    return str(file)


def require_rviz2(package_prefix: Callable[[str], str]) -> None:
    """An error unless rviz2's executable is where launch_ros looks for it (``<prefix of rviz2>/lib/rviz2/rviz2``).

    ``package_prefix``: ``ament_index_python.packages.get_package_prefix`` (raises a KeyError subclass when the
    package is not installed).
    """
    remedy = "install it (apt install ros-$ROS_DISTRO-rviz2) or launch with rviz:=false"
    try:
        prefix = package_prefix("rviz2")
    except KeyError:
        raise LaunchArgumentError(f"rviz:=true but package 'rviz2' is not installed "
                                  f"(not on AMENT_PREFIX_PATH): {remedy}") from None
    executable = os.path.join(prefix, "lib", "rviz2", "rviz2")
    if not os.access(executable, os.X_OK):
        raise LaunchArgumentError(f"rviz:=true but package 'rviz2' has no executable {executable}: {remedy}")


def process_environment(shm_transport: bool, share: str) -> dict[str, str]:
    """Extra environment of every process a launch file starts: the Fast DDS shared-memory profile when asked.

    Every process of the pipeline (camera driver, node, player, planner, rviz2) needs the same profile: with
    ``useBuiltinTransports`` off and UDP on 127.0.0.1 only, it cannot reach a process on the stock transports.
    """
    if not shm_transport:
        return {}
    profile = os.path.join(share, FASTDDS_PROFILE)
    if not os.path.isfile(profile):
        raise LaunchArgumentError(f"shm_transport:=true but the Fast DDS profile {profile} does not exist: "
                                  "reinstall hybridnets_ros, or launch with shm_transport:=false")
    return {FASTDDS_PROFILE_VARIABLE: profile}


def bag_play_command(bag: str, rate: str) -> list[str]:
    """``ros2 bag play`` of an existing bag (folder or file) on its own clock, at a positive ``rate``."""
    if not os.path.exists(os.path.expanduser(bag)):
        raise LaunchArgumentError(f"bag '{bag}' does not exist: give a rosbag2 folder or file, or leave bag empty "
                                  "and play it yourself")
    try:
        speed = float(rate)
    except ValueError:
        speed = float("nan")
    if not speed > 0:
        raise LaunchArgumentError(f"launch argument rate:='{rate}' must be a number above 0 (1.0 = recorded speed)")
    return ["ros2", "bag", "play", os.path.expanduser(bag), "--clock", "--rate", rate]
