"""Bag replay on sim time: frames written to a rosbag2 file with rosbags and played by the bag tool in its own
process with their bag stamps and /clock; the node (use_sim_time) answers with the bag's stamps and judges frame age
on the bag's clock.

Player and node use config/fastdds_shm.xml with 1280x720 frames, and the probe the default transports, so the
profile is shown to talk to processes without it. The node subscribes reliably: whether best-effort 2.7 MB frames
survive depends on the host's shared memory and socket buffers, and this test counts every frame. (The profile is
given to subprocesses only: Fast DDS reads it once per process, so the test process keeps the default transports.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from std_msgs.msg import Header

from hybridnets_ros.ros.bag import write_image_bag
from hybridnets_ros.testing.checkpoints import random_checkpoint
from hybridnets_ros.testing.frames import synthetic_frame
from hybridnets_ros.testing.probe import running_node

TIMEOUT = 120.0
BAG_START_NS = 1_000 * 1_000_000_000  # 1970 + 1000 s: decades older than the wall clock
FRAMES = 4
PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_shm.xml"


@pytest.fixture(scope="module")
def d0_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("d0"))


def _header(stamp_ns: int) -> Header:
    header = Header(frame_id="camera")
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return header


@pytest.mark.slow
def test_replay_outputs_carry_the_bag_stamps(ros_env, tmp_path, d0_weights) -> None:
    bag = tmp_path / "drive_bag"
    stamps = write_image_bag(bag, [synthetic_frame(720, 1280, seed=i) for i in range(FRAMES)],
                             topic="/camera/image_raw", frame_id="camera", rate_hz=1.0, start_ns=BAG_START_NS)
    shm_env = {**ros_env, "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)}
    # On the wall clock every bag frame is older than max_input_age_ms and would be dropped: answers prove that
    # the node runs on the bag's /clock.
    parameters = {"weights": str(d0_weights), "device": "cpu", "use_sim_time": True, "max_input_age_ms": 10000,
                  "input_qos": "reliable"}
    with running_node(shm_env, tmp_path, parameters, {"image_outputs": ("segmentation",)},
                      probe_env=ros_env) as (node, probe):
        player = subprocess.run(
            [sys.executable, "-m", "hybridnets_ros.ros.bag", "play", str(bag), "--clock", "50",
             "--wait-subscribers", str(TIMEOUT)],
            env=shm_env, capture_output=True, text=True, timeout=3 * TIMEOUT)
        assert player.returncode == 0, player.stderr
        last = _header(stamps[-1])
        assert probe.wait_for_output("camera/detections", last, TIMEOUT) is not None, node.log()
        assert probe.wait_for_output("camera/segmentation", last, TIMEOUT) is not None
        values = probe.wait_for_diagnostics(
            "camera camera", TIMEOUT, lambda v: int(v["published"]) + int(v["dropped"]) == FRAMES)
        assert values is not None, f"frames lost on the way: {probe.diagnostics('camera camera')}"
        assert values["received"] == str(FRAMES) and values["dropped_stale"] == "0"
    bag_headers = [_header(s) for s in stamps]
    answered = probe.messages("camera/detections")
    assert answered and all(msg.header in bag_headers for msg in answered)
