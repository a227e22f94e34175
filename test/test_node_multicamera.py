"""Two cameras served by one node in batches of two, each answered on its own topics with its own header, all of it
inside a namespace (config/hybridnets.yaml applies there too: `/**`)."""
from __future__ import annotations

from pathlib import Path

import pytest

from hybridnets_ros.ros import conversions
from hybridnets_ros.testing.checkpoints import random_checkpoint
from hybridnets_ros.testing.frames import synthetic_frame, unique_header
from hybridnets_ros.testing.probe import running_node

TIMEOUT = 120.0
CAMERAS = ("front", "rear")


@pytest.fixture(scope="module")
def d0_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("d0"))


@pytest.mark.slow
def test_two_cameras_are_batched_and_answered_separately(ros_env, tmp_path, d0_weights) -> None:
    # A long batch wait makes pairing certain however the two frames are delayed on a busy machine.
    parameters = {"weights": str(d0_weights), "device": "cpu", "cameras": list(CAMERAS), "max_batch_wait_ms": 5000,
                  "input_qos": "reliable"}
    probe_options = {"cameras": CAMERAS, "image_outputs": ("segmentation",), "namespace": "/robot1"}
    with running_node(ros_env, tmp_path, parameters, probe_options) as (node, probe):
        for round_ in range(3):
            sent = {}
            for i, camera in enumerate(CAMERAS):
                height, width = (720, 1280) if camera == "front" else (480, 640)
                frame = synthetic_frame(height, width, seed=10 * round_ + i)
                header = unique_header(frame_id=f"{camera}_optical")
                sent[camera] = (probe.publish(camera, conversions.array_to_image(frame, header, "bgr8")), (height, width))
            for camera, (header, (height, width)) in sent.items():
                detections = probe.wait_for_output(f"{camera}/detections", header, TIMEOUT)
                assert detections is not None, f"round {round_}: no answer for {camera}; node log:\n{node.log()}"
                seg = probe.wait_for_output(f"{camera}/segmentation", header, TIMEOUT)
                assert seg is not None and (seg.height, seg.width) == (height, width)
                other = next(c for c in CAMERAS if c != camera)
                assert probe.find(f"{other}/detections", header) is None  # never on the other camera's topic
        model = probe.wait_for_diagnostics(": model", TIMEOUT, lambda v: int(v["batches"]) >= 3)
        assert model is not None
        assert probe.subscriptions[0].topic_name == "/robot1/front/detections"
        assert model["batch_size"] == "2"
        assert int(model["batches"]) == 3  # three rounds, each one forward pass over both cameras
        for camera in CAMERAS:
            values = probe.diagnostics(f"camera {camera}")
            assert values is not None and values["published"] == "3" and values["dropped"] == "0"
