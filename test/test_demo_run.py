"""``python -m hybridnets_ros.demo`` (what ``make demo`` runs): a short drive end to end through the real node
executable, and that no process it started outlives it, whether it succeeds, the node fails or it is interrupted.

The demo runs its default, the bundled model, so the run also checks that it sees the cars and the road.
"""
from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from nav_msgs.msg import OccupancyGrid
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image

from hybridnets_ros.demo.birdseye import FREE_BGR
from hybridnets_ros.demo.drive import START_NS
from hybridnets_ros.demo.report import pick_evenly
from hybridnets_ros.demo.run import DemoError, DemoPaths
from hybridnets_ros.ros.bag import read_messages
from hybridnets_ros.ros.conversions import image_to_array

vision_msgs_msg = pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not installed: run `make setup`")

REPO_ROOT = Path(__file__).resolve().parents[1]
FRAMES = 8
RATE = 5.0
RUN_TIMEOUT_S = 540.0  # node start-up (torch import, model warm-up) can take a minute on a busy 2-core machine
STARTED = re.compile(r"started (\w+) \(pid (\d+)\)")


def _demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hybridnets_ros.demo", *args]


def _alive(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """The pids still alive after ``timeout`` s (orphans are reaped by init shortly after their parent ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _headers(bag: Path, topic: str, msg_type: type) -> list:
    return [deserialize_message(raw, msg_type) for _, _, _, raw in read_messages(bag, [topic])]


@pytest.mark.slow
def test_demo_replays_a_drive_through_the_node_and_writes_its_results(ros_env, tmp_path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(_demo_command("--output", str(out), "--frames", str(FRAMES), "--rate", str(RATE)),
                            cwd=REPO_ROOT, env=ros_env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    summary = json.loads((out / "summary.json").read_text())
    assert f"summary     {out / 'summary.json'}" in result.stdout  # the printed summary says where things are

    # No process the demo started is left.
    pids = [int(p) for p in summary["processes"].values()]
    assert {"node", "recorder"} <= set(summary["processes"])
    assert _wait_gone(pids) == []

    # The input bag: FRAMES bgr8 1280x720 frames stamped start + i / rate, each with the camera's CameraInfo.
    inputs = _headers(out / "input_bag", "/camera/image_raw", Image)
    input_stamps = [_stamp(m) for m in inputs]
    assert input_stamps == [START_NS + round(i * 1e9 / RATE) for i in range(FRAMES)]
    assert {(m.width, m.height, m.encoding) for m in inputs} == {(1280, 720, "bgr8")}
    infos = _headers(out / "input_bag", "/camera/camera_info", CameraInfo)
    assert [(_stamp(m), m.header.frame_id) for m in infos] == [(_stamp(m), m.header.frame_id) for m in inputs]
    assert {(m.width, m.height, m.distortion_model) for m in infos} == {(1280, 720, "plumb_bob")}

    # The output bag: answers carry the input headers unchanged, masks at the input size.
    detections = _headers(out / "output_bag", "/camera/detections", vision_msgs_msg.Detection2DArray)
    segmentation = _headers(out / "output_bag", "/camera/segmentation", Image)
    assert detections and segmentation
    assert {_stamp(m) for m in detections} <= set(input_stamps)
    assert {_stamp(m) for m in segmentation} <= set(input_stamps)
    assert {m.header.frame_id for m in detections + segmentation} == {"camera"}
    assert {(m.width, m.height, m.encoding) for m in segmentation} == {(1280, 720, "mono8")}
    assert set(summary["output_topics"]) == {"/camera/detections", "/camera/segmentation", "/camera/overlay",
                                             "/diagnostics", "/label_info", "/camera/drivable_area/grid",
                                             "/camera/detections_3d", "/camera/lane_lines/polylines"}

    # The ground-plane outputs came (CameraInfo from the bag, the pose as a parameter): the drivable grid in
    # base_footprint for answered frames, mostly drivable straight ahead of the camera.
    grids = _headers(out / "output_bag", "/camera/drivable_area/grid", OccupancyGrid)
    assert grids and {_stamp(m) for m in grids} <= set(input_stamps)
    assert {m.header.frame_id for m in grids} == {"base_footprint"}
    ground = summary["ground"]
    assert ground["frames_with_grid"] == len(grids)
    assert 0.1 < ground["grid_drivable_share_of_seen_mean"] < 0.9 and ground["grid_seen_share_mean"] > 0.1
    for grid in grids:
        cells = np.asarray(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
        x = grid.info.origin.position.x + (np.arange(grid.info.width) + 0.5) * grid.info.resolution
        y = grid.info.origin.position.y + (np.arange(grid.info.height) + 0.5) * grid.info.resolution
        # The ego lane just in front of the car (seen from 3.2 m on; the traffic keeps 6 m ahead).
        ahead = cells[np.abs(y) < 1.0][:, (x > 4.0) & (x < 5.5)]
        assert np.mean(ahead == 0) > 0.8, _stamp(grid)
    assert ground["frames_with_detections_3d"] > 0 and ground["camera_pose"][2] > 0.5

    # The summary agrees with the bags and with itself.
    answered = {_stamp(m) for m in detections}
    assert summary["frames_in"] == FRAMES
    assert 0 < summary["frames_out"] <= summary["frames_in"]
    assert summary["frames_out"] == len(answered)
    assert summary["frames_dropped"] == summary["frames_in"] - summary["frames_out"]
    det = summary["detections"]
    assert det["per_frame"] == [len(m.detections) for m in detections]
    assert det["total"] == sum(det["per_frame"]) and det["per_frame_min"] <= det["per_frame_mean"] <= det[
        "per_frame_max"]
    counters = summary["node_counters"]
    assert summary["frames_out"] <= counters["published"] <= counters["received"] <= FRAMES
    assert counters["published"] + counters["dropped"] + counters["invalid"] + counters["failed"] == counters[
        "received"]
    for latency in summary["latency_ms"].values():
        assert 0 < latency["p50"] <= latency["p95"]

    # Overlay PNGs: full-size, and visibly not the plain input frame (masks are blended in); the bird's-eye panel
    # on the right (as tall as the frame, the grid's 50 m x 30 m at one scale) shows the frame's grid.
    pngs = [Path(p) for p in summary["files"]["pngs"]]
    assert 1 <= len(pngs) <= 4 and all(p.parent == out for p in pngs)
    panel_width = summary["overlay_video"]["birdseye_panel_width"]
    assert panel_width == round(720 * 30 / 50)
    grid_stamps = {_stamp(m) for m in grids}
    panels_with_grid = 0
    for png in pngs:
        image = cv2.imread(str(png), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (720, 1280 + panel_width, 3)
        overlay, panel = image[:, :1280], image[:, 1280:]
        index = int(re.fullmatch(r"overlay_frame(\d+)\.png", png.name).group(1))
        changed = np.any(overlay != image_to_array(inputs[index]), axis=2).mean()
        assert changed > 0.05, f"{png.name}: only {changed:.1%} of the pixels differ from the input frame"
        free = np.all(panel == FREE_BGR, axis=2).mean()
        if input_stamps[index] in grid_stamps:
            panels_with_grid += 1
            assert free > 0.02, f"{png.name}: the panel shows {free:.1%} drivable pixels"
        else:
            assert free == 0.0, f"{png.name}: a panel without a grid shows drivable cells"
    assert panels_with_grid > 0

    # The video runs in real time: one frame per input frame from the first answered one, each answer held until
    # the next.
    overlays = _headers(out / "output_bag", "/camera/overlay", Image)
    assert overlays and {_stamp(m) for m in overlays} <= set(input_stamps)
    first_shown = min(input_stamps.index(_stamp(m)) for m in overlays)
    assert summary["overlay_video"] == {"frames": FRAMES - first_shown, "fps": RATE,
                                        "birdseye_panel_width": panel_width}
    video = cv2.VideoCapture(summary["files"]["video"])
    try:
        assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES - first_shown
        ok, frame = video.read()
        assert ok and frame.shape == (720, 1280 + panel_width, 3)
    finally:
        video.release()

    # The bundled, trained model (the demo's default) sees the traffic and the road.
    assert det["per_frame_mean"] > 0
    assert summary["segmentation"]["mean_image_fraction"]["road"] > 0.1


def _read_lines(stream, lines: "queue.Queue[str]") -> None:
    for line in stream:
        lines.put(line)


@pytest.mark.slow
def test_interrupted_demo_stops_every_process_it_started(ros_env, tmp_path) -> None:
    demo = subprocess.Popen(_demo_command("--output", str(tmp_path / "demo"), "--frames", "40", "--rate", "2"),
                            cwd=REPO_ROOT, env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(demo.stdout, lines), daemon=True).start()
    output, pids = [], {}
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline and demo.poll() is None:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            output.append(line)
            if match := STARTED.search(line):
                pids[match.group(1)] = int(match.group(2))
            if "replaying" in line:  # node and recorder up, the drive under way (20 s of it)
                break
        assert demo.poll() is None, "the demo ended before replaying:\n" + "".join(output) + demo.stderr.read()
        assert {"node", "recorder"} <= set(pids)
        assert all(_alive(p) for p in pids.values())
        demo.send_signal(signal.SIGINT)  # to the demo only: it must stop its children itself
        code = demo.wait(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert code == 130
    assert "interrupted" in demo.stderr.read()
    assert _wait_gone(list(pids.values())) == []


@pytest.mark.slow
def test_demo_reports_a_node_that_fails_to_start_and_leaves_nothing_behind(ros_env, tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    result = subprocess.run(_demo_command("--output", str(tmp_path / "demo"), "--frames", "2", "--weights", str(bad)),
                            cwd=REPO_ROOT, env=ros_env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 1
    assert "demo failed" in result.stderr and "node (pid" in result.stderr and "exited with code 1" in result.stderr
    assert "bad.pt" in result.stderr  # the node's own explanation is shown
    pids = [int(m.group(2)) for m in STARTED.finditer(result.stdout)]
    assert pids and _wait_gone(pids) == []


def test_missing_weights_fail_before_anything_starts(tmp_path) -> None:
    result = subprocess.run(_demo_command("--output", str(tmp_path / "demo"), "--weights", str(tmp_path / "no.pt")),
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "no.pt' does not exist" in result.stderr
    assert "started" not in result.stdout and not (tmp_path / "demo").exists()


def test_output_folder_keeps_everything_but_earlier_demo_results(tmp_path) -> None:
    paths = DemoPaths(tmp_path)
    (tmp_path / "input_bag").mkdir()
    (tmp_path / "input_bag" / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    (tmp_path / "output_bag").mkdir()  # empty: a recorder that never wrote
    (tmp_path / "overlay_frame003.png").write_bytes(b"x")
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    paths.prepare()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "notes.txt"]

    (tmp_path / "input_bag").mkdir()
    (tmp_path / "input_bag" / "data.bin").write_bytes(b"not a bag")
    with pytest.raises(DemoError, match="not a bag of an earlier demo run"):
        DemoPaths(tmp_path).prepare()
    assert (tmp_path / "input_bag" / "data.bin").is_file()


@pytest.mark.parametrize(("count", "wanted", "expected"), [
    (8, 4, [0, 2, 5, 7]), (3, 4, [0, 1, 2]), (1, 4, [0]), (0, 4, []), (40, 1, [0]), (40, 2, [0, 39]),
])
def test_pick_evenly_spreads_indices_over_the_drive(count: int, wanted: int, expected: list[int]) -> None:
    assert pick_evenly(count, wanted) == expected
