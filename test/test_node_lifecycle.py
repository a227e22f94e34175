"""Lifecycle of the node through its services (lifecycle_msgs ChangeState / GetState), and clear failures for bad
weights and parameters: a log line naming the file, the problem and the remedy, never a traceback."""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from lifecycle_msgs.msg import Transition

from hybridnets_ros.ros import conversions
from hybridnets_ros.testing.checkpoints import random_checkpoint
from hybridnets_ros.testing.frames import synthetic_frame, unique_header
from hybridnets_ros.testing.node_process import NodeProcess
from hybridnets_ros.testing.probe import NodeProbe, running_node

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def d0_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("d0"))


@pytest.fixture
def managed(ros_env, tmp_path, d0_weights) -> Iterator[tuple[NodeProcess, NodeProbe]]:
    """A node that waits for a lifecycle manager (autostart false), and a probe to drive it."""
    node = NodeProcess(ros_env, tmp_path / "node.log",
                       {"weights": str(d0_weights), "device": "cpu", "input_qos": "reliable", "autostart": False})
    try:
        with NodeProbe(ros_env, image_outputs=(), label_info=False) as probe:
            yield node, probe
    finally:
        node.stop()


def _answered(probe: NodeProbe) -> bool:
    header = unique_header()
    probe.publish("camera", conversions.array_to_image(synthetic_frame(72, 128), header, "bgr8"))
    return probe.wait_for_output("camera/detections", header, TIMEOUT) is not None


def _image_subscribed(probe: NodeProbe) -> int:
    return probe.publishers["camera"].get_subscription_count()


@pytest.mark.slow
def test_configure_activate_deactivate_cleanup_cycles(managed) -> None:
    node, probe = managed
    assert probe.get_state(TIMEOUT) == "unconfigured"
    for cycle in range(2):
        assert probe.change_state(Transition.TRANSITION_CONFIGURE, TIMEOUT), node.log()
        assert probe.get_state() == "inactive"
        for _ in range(2):
            assert probe.change_state(Transition.TRANSITION_ACTIVATE, TIMEOUT)
            assert probe.get_state() == "active"
            assert probe.wait_matched(TIMEOUT)
            assert _answered(probe), f"cycle {cycle}: active node did not answer"
            assert probe.change_state(Transition.TRANSITION_DEACTIVATE, TIMEOUT)
            assert probe.get_state() == "inactive"
            # inactive: the image subscription is gone, so nothing is processed
            assert probe.wait_until(lambda: _image_subscribed(probe) == 0, TIMEOUT)
        assert probe.change_state(Transition.TRANSITION_CLEANUP, TIMEOUT)
        assert probe.get_state() == "unconfigured"
        detections = next(s for s in probe.subscriptions if s.topic_name == "/camera/detections")
        assert probe.wait_until(lambda: detections.get_publisher_count() == 0, TIMEOUT)  # publishers freed too
    assert not probe.change_state(Transition.TRANSITION_ACTIVATE, TIMEOUT)  # not allowed from unconfigured
    assert probe.change_state(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN, TIMEOUT)
    assert probe.get_state() == "finalized"
    assert node.stop() == 0
    assert "Traceback" not in node.log()


def test_missing_weights_fail_configure_with_a_clear_message(ros_env, tmp_path) -> None:
    missing = tmp_path / "no_such_model.pt"
    with NodeProcess(ros_env, tmp_path / "node.log", {"weights": str(missing), "autostart": False}) as node, \
            NodeProbe(ros_env, image_outputs=(), label_info=False) as probe:
        assert probe.get_state(TIMEOUT) == "unconfigured"
        assert probe.change_state(Transition.TRANSITION_CONFIGURE, TIMEOUT) is False
        assert probe.get_state() == "unconfigured"
        assert node.wait_for_log("configure failed", TIMEOUT)
        line = next(line for line in node.log().splitlines() if "configure failed" in line)
        assert str(missing) in line and "does not exist" in line and "parameter 'weights'" in line
        assert node.process.poll() is None  # alive, ready for another try
    assert "Traceback" not in node.log()


def _exit_code_and_log(ros_env, tmp_path, parameters) -> tuple[int, str]:
    node = NodeProcess(ros_env, tmp_path / "node.log", parameters)
    try:
        code = node.process.wait(TIMEOUT)
    finally:
        node.stop()
    return code, node.log()


def test_autostart_with_missing_weights_exits_with_code_1(ros_env, tmp_path) -> None:
    missing = tmp_path / "absent.pt"
    code, log = _exit_code_and_log(ros_env, tmp_path, {"weights": str(missing)})
    assert code == 1
    assert f"weights file '{missing}' does not exist" in log and "autostart failed" in log
    assert "Traceback" not in log


def test_truncated_weights_name_the_file(ros_env, tmp_path, d0_weights) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(d0_weights.read_bytes()[:4096])
    code, log = _exit_code_and_log(ros_env, tmp_path, {"weights": str(truncated), "device": "cpu"})
    assert code == 1
    line = next(line for line in log.splitlines() if "configure failed" in line)
    assert str(truncated) in line and "cannot be read" in line
    assert "Traceback" not in log


def test_invalid_parameter_value_at_start_is_reported(ros_env, tmp_path) -> None:
    code, log = _exit_code_and_log(ros_env, tmp_path, {"precision": "fp8"})
    assert code == 2
    assert "cannot start" in log and "precision must be one of auto, fp32, fp16, int8" in log
    assert "Traceback" not in log


def test_camera_names_too_long_for_a_topic_are_refused_and_configure_leaves_nothing_behind(managed, tmp_path,
                                                                                            d0_weights) -> None:
    """A 250-character camera name used to pass validation and fail configure half-way, leaving the model and
    the first camera's publishers behind (a later configure then had two publishers per topic)."""
    node, probe = managed
    assert probe.get_state(TIMEOUT) == "unconfigured"
    results = probe.set_parameters({"cameras": ["front", "a" * 250]})
    assert results is not None and not results[0].successful
    assert "invalid topic name" in results[0].reason and "250 characters" in results[0].reason

    assert probe.set_parameters({"cameras": ["front"], "weights": str(tmp_path)})[0].successful
    assert probe.change_state(Transition.TRANSITION_CONFIGURE, TIMEOUT) is False
    assert node.wait_for_log("is a directory", TIMEOUT)
    line = next(line for line in node.log().splitlines() if "configure failed" in line)
    assert f"weights file '{tmp_path}' is a directory" in line

    assert probe.set_parameters({"weights": str(d0_weights)})[0].successful
    assert probe.change_state(Transition.TRANSITION_CONFIGURE, TIMEOUT), node.log()
    assert probe.wait_until(lambda: probe.node.count_publishers("/front/detections") >= 1, TIMEOUT)
    assert probe.node.count_publishers("/front/detections") == 1
    assert "Traceback" not in node.log()


def test_sigterm_during_configure_exits_quietly_with_code_0(ros_env, tmp_path, d0_weights) -> None:
    """Eight cameras make the warm-up (inside configure) long enough to be hit by the signal."""
    cameras = [f"camera{i}" for i in range(8)]
    node = NodeProcess(ros_env, tmp_path / "node.log", {"weights": str(d0_weights), "device": "cpu",
                                                         "cameras": cameras})
    try:
        assert node.wait_for_log("loaded model", TIMEOUT), node.log()
        node.process.send_signal(signal.SIGTERM)
        code = node.process.wait(TIMEOUT)
    finally:
        node.stop()
    log = node.log()
    assert code == 0, log
    for noise in ("Traceback", "autostart failed", "ERROR", "error", "Failed", "configure failed"):
        assert noise not in log, f"'{noise}' in:\n{log}"


@pytest.mark.slow
def test_ctrl_c_twice_under_load_shuts_down_cleanly(ros_env, tmp_path, d0_weights) -> None:
    parameters = {"weights": str(d0_weights), "device": "cpu", "input_qos": "reliable", "max_batch_wait_ms": 0}
    frame = synthetic_frame(384, 640)
    with running_node(ros_env, tmp_path, parameters, {"image_outputs": (), "label_info": False}) as (node, probe):
        stop = threading.Event()

        def feed() -> None:
            while not stop.is_set():
                probe.publish("camera", conversions.array_to_image(frame, unique_header(), "bgr8"))
                time.sleep(0.02)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            assert probe.wait_until(lambda: len(probe.messages("camera/detections")) >= 3, TIMEOUT), node.log()
            node.process.send_signal(signal.SIGINT)
            time.sleep(0.3)
            node.process.send_signal(signal.SIGINT)
            code = node.process.wait(TIMEOUT)
        finally:
            stop.set()
            feeder.join()
    log = node.log()
    assert code == 0, log
    assert "Traceback" not in log and "terminate called" not in log and "KeyboardInterrupt" not in log


def test_missing_params_file_is_one_clear_line(ros_env, tmp_path) -> None:
    missing = tmp_path / "no_such_params.yaml"
    node = NodeProcess(ros_env, tmp_path / "node.log", params_file=missing)
    try:
        code = node.process.wait(TIMEOUT)
    finally:
        node.stop()
    log = node.log()
    assert code == 2
    line = next(line for line in log.splitlines() if "cannot start" in line)
    assert str(missing) in line and "--params-file" in line
    assert "Traceback" not in log
