"""Launch files, rviz2 layout and the Fast DDS profile.

With launch_ros importable (a ROS 2 install) the launch descriptions are built and their actions checked. It is
not installable from PyPI, so elsewhere those tests skip and the files are checked statically (syntax, declared
arguments with descriptions)."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType
from xml.etree import ElementTree

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
CAMERA_ARGUMENTS = {"image_topic", "weights", "device", "params_file", "namespace", "use_sim_time", "rviz", "backend"}
REPLAY_ARGUMENTS = {"bag", "image_topic", "weights", "params_file", "namespace", "rviz", "rate", "delay"}


def _declared_arguments(path: Path) -> dict[str, ast.Call]:
    """DeclareLaunchArgument("name", ...) calls in a launch file, by name."""
    calls = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            calls[node.args[0].value] = node
    return calls


@pytest.mark.parametrize(("name", "required"), [("camera.launch.py", CAMERA_ARGUMENTS),
                                                ("replay.launch.py", REPLAY_ARGUMENTS)])
def test_launch_arguments_are_declared_with_descriptions(name: str, required: set[str]) -> None:
    arguments = _declared_arguments(LAUNCH / name)
    assert required <= set(arguments), required - set(arguments)
    for argument, call in arguments.items():
        keywords = {k.arg: k.value for k in call.keywords}
        assert "description" in keywords and "default_value" in keywords, argument


def test_rviz_layout_shows_overlay_and_segmentation() -> None:
    layout = yaml.safe_load((REPO / "config" / "hybridnets.rviz").read_text())
    displays = layout["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"]: d for d in displays if d["Class"] == "rviz_default_plugins/Image"}
    assert {"camera/overlay", "camera/segmentation"} <= set(topics)
    assert topics["camera/overlay"]["Enabled"] and topics["camera/segmentation"]["Enabled"]
    assert layout["Visualization Manager"]["Global Options"]["Fixed Frame"]


def test_fastdds_profile_is_shared_memory_plus_loopback_only() -> None:
    ns = {"d": "http://www.eprosima.com"}
    root = ElementTree.parse(REPO / "config" / "fastdds_shm.xml").getroot()
    descriptors = {d.findtext("d:transport_id", namespaces=ns): d for d in root.iterfind(".//d:transport_descriptor", ns)}
    kinds = {d.findtext("d:type", namespaces=ns): d for d in descriptors.values()}
    assert set(kinds) == {"SHM", "UDPv4"}
    assert int(kinds["SHM"].findtext("d:segment_size", namespaces=ns)) == 32 * 1024 * 1024
    assert [a.text for a in kinds["UDPv4"].iterfind(".//d:address", ns)] == ["127.0.0.1"]
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext(".//d:useBuiltinTransports", namespaces=ns) == "false"
    used = [t.text for t in participant.iterfind(".//d:userTransports/d:transport_id", ns)]
    assert sorted(used) == sorted(descriptors)


# ---- with launch_ros ----------------------------------------------------------------------------------------------


def _load(name: str) -> ModuleType:
    pytest.importorskip("launch_ros", reason="launch_ros is not importable: it is not on PyPI, only in ROS 2 installs; "
                                             "the launch files were only checked statically")
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        get_package_share_directory("hybridnets_ros")
    except PackageNotFoundError:
        pytest.skip("hybridnets_ros is not installed (colcon build / pip install .): no share directory to launch from")
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _node_actions(module: ModuleType, **arguments: str) -> list:
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    description = module.generate_launch_description()
    context = LaunchContext()
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            context.launch_configurations[entity.name] = arguments.get(entity.name, entity.default_value[0].text
                                                                       if entity.default_value else "")
    opaque = next(e for e in description.entities if isinstance(e, OpaqueFunction))
    return opaque.execute(context)


def test_camera_launch_builds_the_lifecycle_node() -> None:
    module = _load("camera.launch.py")
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import LifecycleNode

    description = module.generate_launch_description()
    declared = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert CAMERA_ARGUMENTS <= declared
    actions = _node_actions(module, image_topic="/usb_cam/image_raw", weights="/w.pth")
    assert len(actions) == 1 and isinstance(actions[0], LifecycleNode)
    with_rviz = _node_actions(module, rviz="true")
    assert len(with_rviz) == 2


def test_replay_launch_includes_the_camera_launch_and_the_player() -> None:
    module = _load("replay.launch.py")
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription

    description = module.generate_launch_description()
    declared = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert REPLAY_ARGUMENTS <= declared
    assert any(isinstance(e, IncludeLaunchDescription) for e in description.entities)
    assert any(isinstance(e, ExecuteProcess) for e in description.entities)
