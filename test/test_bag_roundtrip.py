"""rosbag2 tools of hybridnets_ros.ros.bag: written bags read back exactly; the replayer publishes the recorded
bytes with their stamps and /clock; the recorder writes what it receives with the right types. The player and
recorder run as real processes (`python -m hybridnets_ros.ros.bag ...`); this process talks to them through rclpy.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import rclpy
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from hybridnets_ros.ros.bag import read_messages, write_image_bag

vision_msgs_msg = pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not installed: run `make setup`")

REPO_ROOT = Path(__file__).resolve().parents[1]
START_NS = 1_700_000_000_123_456_789
WAIT_S = 30.0  # generous: discovery is usually < 0.1 s but sometimes seconds on a loaded 2-core machine


def _frames(count: int, height: int, width: int, channels: int) -> list[np.ndarray]:
    rng = np.random.default_rng(count * 1000 + channels)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.fixture
def ns() -> str:
    """A namespace of this test's own for every topic, /clock included: even a process that lands on the same DDS
    domain (another pytest run on this machine) cannot mix its messages into this test's."""
    return f"/bag_test_{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize(("encoding", "channels"), [("bgr8", 3), ("mono8", 1), ("rgba8", 4)])
def test_written_image_bag_reads_back_exactly(tmp_path: Path, storage: str, encoding: str, channels: int) -> None:
    frames = _frames(4, 30, 41, channels)  # odd width: no accidental alignment
    stamps = write_image_bag(tmp_path / "bag", frames, topic="/cam/image_raw", frame_id="cam_optical",
                             rate_hz=15.0, encoding=encoding, start_ns=START_NS, storage=storage)

    assert stamps == [START_NS + round(i * 1e9 / 15.0) for i in range(4)]
    messages = list(read_messages(tmp_path / "bag"))
    assert [(t, m, s) for t, m, s, _ in messages] == [("/cam/image_raw", "sensor_msgs/msg/Image", s) for s in stamps]
    for frame, stamp, (_, _, _, raw) in zip(frames, stamps, messages):
        msg = deserialize_message(raw, Image)
        assert (msg.height, msg.width, msg.encoding, msg.step) == (30, 41, encoding, 41 * channels)
        assert (_stamp_ns(msg), msg.header.frame_id) == (stamp, "cam_optical")
        assert bytes(msg.data) == frame.tobytes()


def test_write_image_bag_rejects_frames_that_do_not_match_the_encoding(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="channels"):
        write_image_bag(tmp_path / "bag", _frames(1, 8, 8, 3), encoding="mono8")
    with pytest.raises(ValueError, match="unsupported encoding"):
        write_image_bag(tmp_path / "bag2", _frames(1, 8, 8, 3), encoding="yuv422")


@pytest.fixture
def ros_node(ros_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Node, SingleThreadedExecutor]]:
    """A node in this process, on the same isolated domain and settings that ``ros_env`` gives subprocesses."""
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOG_DIR", "RMW_IMPLEMENTATION"):
        monkeypatch.setenv(key, ros_env[key])
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("bag_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _bag_process(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hybridnets_ros.ros.bag", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(process: subprocess.Popen) -> str:
    """Output of a finished process; kills it first if it is still running (tests leave no DDS process behind)."""
    if process.poll() is None:
        process.kill()
    return process.communicate(timeout=WAIT_S)[0]


def _spin_until(executor: SingleThreadedExecutor, done: Callable[[], bool], what: str,
                process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; the bag process said:\n{_stop(process)}")
        executor.spin_once(timeout_sec=0.05)


def test_player_publishes_recorded_bytes_with_bag_stamps_and_clock(
        tmp_path: Path, ros_env: dict[str, str], ros_node, ns: str) -> None:
    node, executor = ros_node
    frames = _frames(6, 48, 64, 3)
    stamps = write_image_bag(tmp_path / "bag", frames, topic=f"{ns}/camera/image_raw", rate_hz=20.0,
                             start_ns=START_NS)
    recorded = [raw for _, _, _, raw in read_messages(tmp_path / "bag")]

    images: list[bytes] = []
    clock_ns: list[int] = []
    node.create_subscription(Image, f"{ns}/front/image_raw", images.append, 10, raw=True)
    node.create_subscription(Clock, f"{ns}/clock", lambda m: clock_ns.append(m.clock.sec * 10**9 + m.clock.nanosec),
                             QoSProfile(depth=1000))
    # --remap is the player's own option; --ros-args reach rclpy (here: moving /clock into the test's namespace).
    player = _bag_process(["play", str(tmp_path / "bag"), "--clock", "100",
                           "--remap", f"{ns}/camera/image_raw:={ns}/front/image_raw", "--wait-subscribers", str(WAIT_S / 2),
                           "--ros-args", "-r", f"/clock:={ns}/clock"], ros_env)
    try:
        _spin_until(executor, lambda: len(images) == len(frames) and player.poll() is not None, "the replay", player)
    finally:
        output = _stop(player)
    assert player.returncode == 0, output

    assert images == recorded, "the player must publish the recorded CDR bytes unchanged, in order"
    assert [_stamp_ns(deserialize_message(raw, Image)) for raw in images] == stamps
    # /clock carries bag time: each message's stamp exactly, in between only times inside the bag, never backwards.
    # The first ticks may precede the moment this reader matched the clock publisher (DDS matches each side on its
    # own), so stamps are checked from the first tick received on.
    assert clock_ns, "no /clock message received"
    assert clock_ns == sorted(clock_ns)
    assert stamps[0] <= clock_ns[0] and clock_ns[-1] == stamps[-1]
    assert {s for s in stamps if s >= clock_ns[0]} <= set(clock_ns)


def _detections(index: int):
    m = vision_msgs_msg
    detection = m.Detection2D(id=str(index))
    detection.bbox.center.position.x = 10.0 * index
    hypothesis = m.ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id = "car"
    hypothesis.hypothesis.score = 0.5 + index / 100
    detection.results = [hypothesis]
    array = m.Detection2DArray(detections=[detection])
    array.header.frame_id = f"frame_{index}"
    return array


@pytest.mark.parametrize("stop_args", [["--until-idle", "1"], ["--duration", "1"]])
def test_recorder_stops_by_itself(tmp_path: Path, ros_env: dict[str, str], stop_args: list[str]) -> None:
    out = tmp_path / "empty"
    recorder = _bag_process(["record", str(out), "--topics", "/nobody/publishes/this", *stop_args], ros_env)
    try:
        recorder.wait(timeout=WAIT_S)
    finally:
        output = _stop(recorder)
    assert recorder.returncode == 0, output
    assert (out / "metadata.yaml").is_file(), output
    assert list(read_messages(out)) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_recorder_writes_what_it_received_with_types_and_stops_cleanly_on_a_signal(
        tmp_path: Path, ros_env: dict[str, str], ros_node, ns: str, signum: int) -> None:
    node, executor = ros_node
    m = vision_msgs_msg
    label_pub = node.create_publisher(
        m.LabelInfo, f"{ns}/label_info", QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    label_pub.publish(m.LabelInfo(class_map=[m.VisionClass(class_id=256, class_name="car")], threshold=0.25))
    detections_pub = node.create_publisher(m.Detection2DArray, f"{ns}/cam0/detections", 10)
    type_hash = str(node.get_publishers_info_by_topic(f"{ns}/cam0/detections")[0].topic_type_hash)

    out = tmp_path / "recorded"
    # `label_info` is relative: the recorder resolves it in its own namespace, like any ROS name.
    recorder = _bag_process(["record", str(out), "--topics", f"{ns}/cam0/detections", "label_info",
                             "--ros-args", "-r", f"__ns:={ns}"], ros_env)
    try:
        _spin_until(executor, lambda: detections_pub.get_subscription_count() > 0 or recorder.poll() is not None,
                    "the recorder to subscribe", recorder)
        for index in range(5):
            detections_pub.publish(_detections(index))
        # Acknowledged by the recorder's readers (label_info too: transient local reaches the late subscriber), the
        # messages must end up in the bag although the signal comes right after.
        assert detections_pub.wait_for_all_acked(Duration(seconds=WAIT_S))
        assert label_pub.wait_for_all_acked(Duration(seconds=WAIT_S))
        recorder.send_signal(signum)
        recorder.wait(timeout=WAIT_S)
    finally:
        output = _stop(recorder)
    assert recorder.returncode == 0, output
    assert "Traceback" not in output, output
    assert (out / "metadata.yaml").is_file(), "metadata.yaml is written when the bag is closed"

    with Reader(out) as reader:
        connections = {c.topic: c for c in reader.connections}
    assert connections[f"{ns}/cam0/detections"].msgtype == "vision_msgs/msg/Detection2DArray"
    assert connections[f"{ns}/label_info"].msgtype == "vision_msgs/msg/LabelInfo"
    assert connections[f"{ns}/cam0/detections"].digest == type_hash, "the bag must carry the type hash of the wire type"

    detections = [deserialize_message(raw, m.Detection2DArray)
                  for _, _, _, raw in read_messages(out, [f"{ns}/cam0/detections"])]
    assert [d.header.frame_id for d in detections] == [f"frame_{i}" for i in range(5)]
    assert [d.detections[0].bbox.center.position.x for d in detections] == [10.0 * i for i in range(5)]
    (label_raw,) = [raw for _, _, _, raw in read_messages(out, [f"{ns}/label_info"])]
    label_info = deserialize_message(label_raw, m.LabelInfo)
    assert [(c.class_id, c.class_name) for c in label_info.class_map] == [(256, "car")]
