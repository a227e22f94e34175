"""Launch files, their argument checks, rviz2 layout and the Fast DDS profile.

With launch_ros importable (a ROS 2 install) the launch descriptions are built and their actions checked. It is
not installable from PyPI, so elsewhere those tests skip; the files are then checked statically (syntax, declared
arguments, where checks and actions sit in them) and their logic through hybridnets_ros.ros.launch_checks, which
they call before returning any action."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType
from xml.etree import ElementTree

import pytest
import yaml

from hybridnets_ros.ros.launch_checks import (
    FASTDDS_PROFILE_VARIABLE,
    GROUND_ARGUMENTS,
    LaunchArgumentError,
    bag_play_command,
    camera_remappings,
    existing_params_file,
    parse_bool,
    process_environment,
    require_rviz2,
)

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SHARED_ARGUMENTS = {"image_topic", "weights", "device", "backend", "input_qos", "params_file", "namespace",
                    "use_sim_time", "rviz", "shm_transport", "ground_frame", "camera_pose"}
CAMERA_ARGUMENTS = SHARED_ARGUMENTS
REPLAY_ARGUMENTS = SHARED_ARGUMENTS | {"bag", "rate"}
# The functions of hybridnets_ros.ros.launch_checks that check an argument (and raise LaunchArgumentError).
CHECKS = {"existing_params_file", "parse_bool", "require_rviz2", "process_environment", "bag_play_command"}
ACTIONS = {"LifecycleNode", "Node", "ExecuteProcess"}


def _tree(name: str) -> ast.Module:
    path = LAUNCH / name
    return ast.parse(path.read_text(), str(path))


def _calls(tree: ast.AST, names: set[str]) -> list[ast.Call]:
    """Calls of the functions or classes ``names`` (by plain name) under ``tree``, in source order."""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) in names]
    return sorted(calls, key=lambda call: (call.lineno, call.col_offset))


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _declared_arguments(path: Path) -> dict[str, ast.Call]:
    """DeclareLaunchArgument("name", ...) calls in a launch file, by name; a call in a generator over
    launch_checks.GROUND_ARGUMENTS declares each of those names."""
    declared = {}
    for call in _calls(ast.parse(path.read_text(), str(path)), {"DeclareLaunchArgument"}):
        if isinstance(call.args[0], ast.Constant):
            declared[call.args[0].value] = call
    for generator in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(generator, ast.GeneratorExp) and "GROUND_ARGUMENTS" in ast.unparse(generator.generators[0]):
            declared.update({name: generator.elt for name in GROUND_ARGUMENTS})
    return declared


def _forwarded() -> tuple[str, ...]:
    """replay.launch.py's FORWARDED, with launch_checks.GROUND_ARGUMENTS expanded."""
    assignment = next(n for n in _tree("replay.launch.py").body
                      if isinstance(n, ast.Assign) and n.targets[0].id == "FORWARDED")
    names = []
    for element in assignment.value.elts:
        if isinstance(element, ast.Starred):
            assert ast.unparse(element.value) == "GROUND_ARGUMENTS", ast.unparse(element)
            names.extend(GROUND_ARGUMENTS)
        else:
            names.append(ast.literal_eval(element))
    return tuple(names)


def _default(call: ast.Call) -> object:
    return ast.literal_eval(_keyword(call, "default_value"))


@pytest.mark.parametrize(("name", "required"), [("camera.launch.py", CAMERA_ARGUMENTS),
                                                ("replay.launch.py", REPLAY_ARGUMENTS)])
def test_launch_arguments_are_declared_with_descriptions(name: str, required: set[str]) -> None:
    arguments = _declared_arguments(LAUNCH / name)
    assert required <= set(arguments), required - set(arguments)
    for argument, call in arguments.items():
        keywords = {k.arg: k.value for k in call.keywords}
        assert "description" in keywords and "default_value" in keywords, argument


@pytest.mark.parametrize(("name", "function"), [("camera.launch.py", "node_actions"),
                                                ("replay.launch.py", "player_on_active")])
def test_every_check_runs_before_the_first_action_is_made(name: str, function: str) -> None:
    """A check failing after the node was started left it running as an orphan (rviz:=true without rviz2)."""
    body = _function(_tree(name), function)
    checks, actions = _calls(body, CHECKS), _calls(body, ACTIONS)
    assert checks and actions
    assert max(c.lineno for c in checks) < min(a.lineno for a in actions), name


def test_camera_launch_checks_params_file_rviz2_and_booleans() -> None:
    body = _function(_tree("camera.launch.py"), "node_actions")
    called = [c.func.id for c in _calls(body, CHECKS)]
    assert {"existing_params_file", "require_rviz2", "process_environment"} <= set(called)
    assert {c.args[0].value for c in _calls(body, {"parse_bool"})} == {"use_sim_time", "rviz", "shm_transport"}
    node = _calls(body, {"LifecycleNode"})[0]
    assert ast.unparse(_keyword(node, "parameters")).startswith("[params_file,"), "the checked path is passed on"


def test_params_file_must_exist_and_hold_parameters(tmp_path: Path) -> None:
    with pytest.raises(LaunchArgumentError, match="params_file '/nonexistent.yaml' does not exist"):
        existing_params_file("/nonexistent.yaml")
    with pytest.raises(LaunchArgumentError, match="is a directory"):
        existing_params_file(str(tmp_path))
    broken = tmp_path / "broken.yaml"
    broken.write_text("/**:\n  ros__parameters: [unclosed\n")
    with pytest.raises(LaunchArgumentError, match=f"params_file '{broken}' cannot be read as YAML"):
        existing_params_file(str(broken))
    broken.write_text("just a string\n")
    with pytest.raises(LaunchArgumentError, match="holds no parameters"):
        existing_params_file(str(broken))
    with pytest.raises(LaunchArgumentError, match="params_file is empty"):
        existing_params_file("")
    shipped = REPO / "config" / "hybridnets.yaml"
    assert existing_params_file(str(shipped)) == str(shipped)


def test_rviz2_is_looked_up_in_the_ament_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real ament index over a prefix built here: without rviz2, with its marker only, with its executable."""
    from ament_index_python.packages import get_package_prefix

    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    with pytest.raises(LaunchArgumentError, match="package 'rviz2' is not installed.*rviz:=false"):
        require_rviz2(get_package_prefix)
    marker = tmp_path / "share" / "ament_index" / "resource_index" / "packages" / "rviz2"
    marker.parent.mkdir(parents=True)
    marker.touch()
    executable = tmp_path / "lib" / "rviz2" / "rviz2"
    with pytest.raises(LaunchArgumentError, match=f"no executable {executable}"):
        require_rviz2(get_package_prefix)
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    require_rviz2(get_package_prefix)


def test_booleans_are_read_as_launch_conditions_read_them() -> None:
    assert parse_bool("rviz", "True") and parse_bool("rviz", "1")
    assert not parse_bool("use_sim_time", "false") and not parse_bool("use_sim_time", " 0 ")
    with pytest.raises(LaunchArgumentError, match="use_sim_time:='ture' is not a boolean"):
        parse_bool("use_sim_time", "ture")


def test_replay_declares_and_honours_use_sim_time() -> None:
    """use_sim_time was offered with default 'false' and then forced to 'true'."""
    tree = _tree("replay.launch.py")
    assert _default(_declared_arguments(LAUNCH / "replay.launch.py")["use_sim_time"]) == "true"
    assert "use_sim_time" in _forwarded()
    include = _calls(tree, {"IncludeLaunchDescription"})[0]
    fixed = [e for e in ast.walk(include) if isinstance(e, ast.Tuple) and isinstance(e.elts[1], ast.Constant)]
    assert not fixed, f"values forced on camera.launch.py: {[ast.unparse(e) for e in fixed]}"
    assert _default(_declared_arguments(LAUNCH / "camera.launch.py")["use_sim_time"]) == "false"


def test_replay_forwards_every_camera_launch_argument() -> None:
    """ground_frame and camera_pose were declared by camera.launch.py only: a replay could not set the pose."""
    camera = set(_declared_arguments(LAUNCH / "camera.launch.py"))
    replay = set(_declared_arguments(LAUNCH / "replay.launch.py"))
    forwarded = _forwarded()
    assert len(set(forwarded)) == len(forwarded)
    assert camera == set(forwarded), (camera - set(forwarded), set(forwarded) - camera)
    assert set(forwarded) <= replay, set(forwarded) - replay
    assert set(GROUND_ARGUMENTS) <= camera
    for name, (default, text) in GROUND_ARGUMENTS.items():
        assert default == "" and "params_file" in text, name  # empty keeps params_file's value


def test_replay_plays_the_bag_when_the_node_is_active() -> None:
    """The player started after a fixed delay, which the model loading often outlasted (first frames lost)."""
    tree = _tree("replay.launch.py")
    assert "--delay" not in ast.unparse(tree) and "delay" not in _declared_arguments(LAUNCH / "replay.launch.py")
    players = _calls(tree, {"ExecuteProcess"})
    handlers = _calls(tree, {"OnStateTransition"})
    assert players and len(handlers) == 1
    assert ast.literal_eval(_keyword(handlers[0], "goal_state")) == "active"
    assert ast.literal_eval(_keyword(handlers[0], "handle_once")) is True
    inside = {id(n) for n in ast.walk(_keyword(handlers[0], "entities"))}
    assert all(id(p) in inside for p in players), "every player must start from the transition to active"
    # The handler (and the bag check) come before the include that starts the node.
    body = _function(tree, "generate_launch_description")
    made = {n.targets[0].id: n.value.func.id for n in body.body
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name)}
    listed = [made.get(e.id) for e in _calls(body, {"LaunchDescription"})[0].args[0].elts if isinstance(e, ast.Name)]
    assert listed.index("OpaqueFunction") < listed.index("IncludeLaunchDescription")


def test_bag_play_command(tmp_path: Path) -> None:
    assert bag_play_command(str(tmp_path), "2.0") == ["ros2", "bag", "play", str(tmp_path), "--clock", "--rate", "2.0"]
    with pytest.raises(LaunchArgumentError, match="bag '/no/such/bag' does not exist"):
        bag_play_command("/no/such/bag", "1.0")
    for rate in ("0", "-1", "fast", "nan"):
        with pytest.raises(LaunchArgumentError, match=f"rate:='{rate}' must be a number above 0"):
            bag_play_command(str(tmp_path), rate)


def test_shm_transport_sets_the_fastdds_profile_for_every_process(tmp_path: Path) -> None:
    """No launch argument set the shared-memory profile, without which large frames were lost over UDP."""
    assert process_environment(True, str(REPO)) == {FASTDDS_PROFILE_VARIABLE: str(REPO / "config" / "fastdds_shm.xml")}
    assert process_environment(False, str(REPO)) == {}
    with pytest.raises(LaunchArgumentError, match="fastdds_shm.xml does not exist"):
        process_environment(True, str(tmp_path))
    for name in ("camera.launch.py", "replay.launch.py"):
        description = ast.literal_eval(_keyword(_declared_arguments(LAUNCH / name)["shm_transport"], "description"))
        assert "fastdds_shm.xml" in description and "every process of the pipeline" in description, name
        processes = _calls(_tree(name), ACTIONS)
        assert processes and all(_keyword(p, "additional_env") is not None for p in processes), name


@pytest.mark.slow
def test_the_node_announces_active_where_launch_ros_listens(ros_env, tmp_path: Path) -> None:
    """replay.launch.py starts the player on launch_ros's StateTransition event, which its LifecycleNode action
    makes from the node's ``<name>/transition_event`` messages (subscribed before the process starts, as here)."""
    from lifecycle_msgs.msg import TransitionEvent

    from hybridnets_ros.testing.checkpoints import random_checkpoint
    from hybridnets_ros.testing.node_process import NodeProcess
    from hybridnets_ros.testing.probe import NodeProbe

    with NodeProbe(ros_env, image_outputs=(), label_info=False) as probe:
        probe.subscribe(TransitionEvent, "hybridnets/transition_event", 10)
        weights = random_checkpoint(tmp_path)
        with NodeProcess(ros_env, tmp_path / "node.log", {"weights": str(weights), "device": "cpu"}) as node:
            def active() -> bool:
                return any(m.goal_state.label == "active" for _, m in probe.received.get(
                    "hybridnets/transition_event", []))
            assert probe.wait_until(active, 120.0), node.log()
    labels = [m.goal_state.label for _, m in probe.received["hybridnets/transition_event"]]
    assert labels[labels.index("active") - 1] == "activating", labels


def test_camera_remappings() -> None:
    assert camera_remappings("camera", "/usb_cam/image_raw") == [
        ("camera/image_raw", "/usb_cam/image_raw"),
        ("camera/image_raw/compressed", "/usb_cam/image_raw/compressed"),
        ("camera/camera_info", "/usb_cam/camera_info"),
    ]
    assert camera_remappings("camera", "image")[2] == ("camera/camera_info", "camera_info")


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
    from ament_index_python.packages import get_package_prefix
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import LifecycleNode

    description = module.generate_launch_description()
    declared = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert CAMERA_ARGUMENTS <= declared
    actions = _node_actions(module, image_topic="/usb_cam/image_raw", weights="/w.pth")
    assert len(actions) == 1 and isinstance(actions[0], LifecycleNode)
    with pytest.raises(LaunchArgumentError, match="params_file '/nonexistent.yaml' does not exist"):
        _node_actions(module, params_file="/nonexistent.yaml")
    with pytest.raises(LaunchArgumentError, match="use_sim_time:='maybe'"):
        _node_actions(module, use_sim_time="maybe")
    try:
        require_rviz2(get_package_prefix)
    except LaunchArgumentError:
        with pytest.raises(LaunchArgumentError, match="rviz2"):
            _node_actions(module, rviz="true")
    else:
        assert len(_node_actions(module, rviz="true")) == 2


def test_replay_launch_includes_the_camera_launch_and_the_player(tmp_path: Path) -> None:
    module = _load("replay.launch.py")
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler

    description = module.generate_launch_description()
    assert any(isinstance(e, IncludeLaunchDescription) for e in description.entities)
    assert _node_actions(module) == []  # no bag: the user plays it
    handlers = _node_actions(module, bag=str(tmp_path), shm_transport="true")
    assert len(handlers) == 1 and isinstance(handlers[0], RegisterEventHandler)
    with pytest.raises(LaunchArgumentError, match="bag '/no/such/bag' does not exist"):
        _node_actions(module, bag="/no/such/bag")
