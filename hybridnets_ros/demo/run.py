"""The demo's sequence: input bag, node, recorder, replay with /clock, wait for the answers, stop, report.

Every ROS process runs on this host only (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) in a DDS domain of its own
(ROS_DOMAIN_ID from the environment, else a random one in 1..100), and is stopped by PID however the demo ends.
``ros2 bag play --clock`` / ``ros2 bag record`` are used where a ROS 2 install puts ``ros2`` on PATH; otherwise
the project's rosbags-based tools: the recorder as ``python -m hybridnets_ros.ros.bag record``, the player
(``bag.play_bag``) in this process (see ``play_in_process``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hybridnets_ros.demo.drive import START_NS, DriveBag, write_drive_bag
from hybridnets_ros.demo.monitor import GraphMonitor
from hybridnets_ros.demo.report import OutputReport, percentiles, read_output_bag
from hybridnets_ros.resources import WeightsFileError, resolve_weights
from hybridnets_ros.ros.bag import play_bag
from hybridnets_ros.testing.environment import ros_environment
from hybridnets_ros.testing.node_process import node_arguments
from hybridnets_ros.testing.processes import ChildProcess, ChildProcesses

LOG = logging.getLogger(__name__)

CAMERA = "camera"
IMAGE_TOPIC = f"/{CAMERA}/image_raw"
# The ground-plane outputs are computed only while subscribed: recording them makes the node place the drive on the
# road (the bag carries the drive camera's CameraInfo, its pose is a node parameter).
GROUND_TOPICS = (f"/{CAMERA}/drivable_area/grid", f"/{CAMERA}/detections_3d", f"/{CAMERA}/lane_lines/polylines")
OUTPUT_TOPICS = (f"/{CAMERA}/detections", f"/{CAMERA}/segmentation", f"/{CAMERA}/overlay", "/diagnostics",
                 "/label_info", *GROUND_TOPICS)
CLOCK_HZ = 40.0
NODE_START_TIMEOUT_S = 300.0  # loading torch and the model on a busy 2-core machine
RECORDER_START_TIMEOUT_S = 60.0
PLAYER_WAIT_SUBSCRIBERS_S = 30.0
FRESH_DIAGNOSTICS_S = 1.5  # a /diagnostics report this long after the replay ended counts every frame received
STABLE_S = 3.0
RECORDER_GRACE_S = 1.0  # the last frame's segmentation and overlay leave the node just after its detections
DEFAULT_IDLE_TIMEOUT_S = 10.0
NUM_PNGS = 4


class DemoError(RuntimeError):
    """The demo cannot go on; the message says what failed and shows the relevant log."""


@dataclass(frozen=True)
class DemoOptions:
    output: Path = Path("demo_output")
    frames: int = 40
    rate: float = 5.0
    weights: Path | None = None  # None: the node's default, the bundled model
    seed: int = 3
    size: tuple[int, int] = (1280, 720)  # width, height
    bag_tools: str = "auto"  # auto (ros2 if on PATH), ros2 or project
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S


@dataclass(frozen=True)
class DemoPaths:
    """Where everything goes under the output folder."""

    root: Path

    @property
    def input_bag(self) -> Path:
        return self.root / "input_bag"

    @property
    def output_bag(self) -> Path:
        return self.root / "output_bag"

    @property
    def video(self) -> Path:
        return self.root / "overlay.mp4"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def previous_results(self) -> list[Path]:
        """What an earlier run left here (bags cannot be overwritten); nothing else in the folder is touched."""
        bags = [p for p in (self.input_bag, self.output_bag) if (p / "metadata.yaml").is_file() or _empty_dir(p)]
        files = [self.video, self.summary, *self.root.glob("overlay_frame*.png")]
        return bags + [p for p in files if p.is_file()] + ([self.logs] if self.logs.is_dir() else [])

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for path in self.previous_results():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        for path in (self.input_bag, self.output_bag):
            if path.exists():
                raise DemoError(f"{path} exists and is not a bag of an earlier demo run: move it away or choose "
                                "another --output folder")
        self.logs.mkdir()


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


@dataclass
class Timings:
    """Wall-clock seconds of each phase."""

    values: dict[str, float] = field(default_factory=dict)
    _start: float = field(default_factory=time.monotonic, repr=False)

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.values[phase] = round(now - self._start, 2)
        self._start = now


def demo_environment(log_dir: Path) -> dict[str, str]:
    """The environment of every ROS process of the demo (and of its monitor)."""
    domain = os.environ.get("ROS_DOMAIN_ID", "").strip() or str(random.randint(1, 100))
    if not domain.isdigit():
        raise DemoError(f"ROS_DOMAIN_ID must be a number (0..101, 1..100 recommended), got '{domain}'")
    env = ros_environment(domain_id=int(domain))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # project rule: DDS traffic stays on this host
    env["ROS_LOG_DIR"] = str(log_dir / "ros")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HOME", str(log_dir))  # rclpy.init needs HOME or ROS_LOG_DIR; keep both defined
    return env


def use_ros2_bag(bag_tools: str) -> bool:
    """Whether to play and record with ``ros2 bag`` (a ROS 2 install) rather than the project's tools."""
    if bag_tools == "ros2" and shutil.which("ros2") is None:
        raise DemoError("--bag-tools ros2: no `ros2` on PATH (source your ROS 2 setup first)")
    return bag_tools == "ros2" or (bag_tools == "auto" and shutil.which("ros2") is not None)


def node_args(weights: Path | None, camera_pose: list[float]) -> list[str]:
    """The node's real executable with config/hybridnets.yaml, sim time, a reliable input (a replay must
    not lose frames: best effort drops large images on the default transports) and the drive camera's pose."""
    parameters: dict[str, Any] = {"use_sim_time": True, "input_qos": "reliable",
                                  f"{CAMERA}.camera_pose": [float(v) for v in camera_pose]}
    if weights is not None:
        parameters["weights"] = str(weights)
    return node_arguments(parameters)


def recorder_args(ros2: bool, bag: Path) -> list[str]:
    if ros2:
        return ["ros2", "bag", "record", "-o", str(bag), *OUTPUT_TOPICS]
    return [sys.executable, "-m", "hybridnets_ros.ros.bag", "record", str(bag), "--topics", *OUTPUT_TOPICS]


def ros2_player_args(bag: Path) -> list[str]:
    # --wait-for-all-acked: the player must not exit before the node has taken the last (large, reliable) frame.
    return ["ros2", "bag", "play", str(bag), "--clock", f"{CLOCK_HZ:g}", "--wait-for-all-acked", "10000",
            "--disable-keyboard-controls"]


def _fail(what: str, child: ChildProcess) -> DemoError:
    state = "is still running" if child.running() else f"exited with code {child.returncode}"
    return DemoError(f"{what}: {child.name} (pid {child.pid}) {state}; last lines of {child.log_path}:\n"
                     f"{child.log_tail()}")


def _wait_for(condition: Callable[[], bool], timeout_s: float, watched: list[ChildProcess], what: str) -> None:
    """Poll ``condition`` until it holds; a watched process that ends or the timeout raise DemoError."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for child in watched:
            if not child.running():
                raise _fail(f"while waiting for {what}", child)
        if time.monotonic() > deadline:
            raise _fail(f"no {what} within {timeout_s:.0f} s", watched[0])
        time.sleep(0.05)


def play_in_process(monitor: GraphMonitor, bag: Path, timeout_s: float, watched: list[ChildProcess]) -> int:
    """Replay ``bag`` with /clock through the project's player (``bag.play_bag``) on the monitor's node; returns
    the number of messages published.

    In this process rather than as ``python -m hybridnets_ros.ros.bag play``, so that its publishers outlive the
    replay: a player process that exits right after its last publish can take a large reliable frame, not yet
    delivered, down with it. The publishers live until the monitor closes, after the node has answered.
    """
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def play() -> None:
        try:
            outcome["published"] = play_bag(monitor.node, bag, clock_hz=CLOCK_HZ,
                                            wait_subscribers_s=PLAYER_WAIT_SUBSCRIBERS_S, stop=stop)
        except Exception as exc:  # reported by the main thread, which owns the error handling
            outcome["error"] = exc

    player = threading.Thread(target=play, name="demo-player", daemon=True)
    player.start()
    try:
        _wait_for(lambda: not player.is_alive(), timeout_s, watched, "end of the replay")
    finally:
        stop.set()
        player.join(timeout=10.0)
    if "error" in outcome:
        raise DemoError(f"the replay of {bag} failed: {type(outcome['error']).__name__}: {outcome['error']}")
    return outcome["published"]


def wait_until_answered(monitor: GraphMonitor, node: ChildProcess, frames_in: int, replay_end: float,
                        idle_timeout_s: float) -> str:
    """Block until the node has answered every frame it took, and say how that was decided.

    "all frames accounted for": a /diagnostics report sent well after the replay shows each frame the node received
    published, dropped or rejected, this monitor got all the published detections, and either every frame of the
    bag was received or the counters stayed put for ``STABLE_S`` (a frame lost on the way). "idle": nothing new
    (detections or diagnostics counters) for ``idle_timeout_s``.
    """
    last_change, last_seen = replay_end, None
    while True:
        if not node.running():
            raise _fail("while waiting for the last answers", node)
        diagnostics = monitor.camera_diagnostics
        seen = (monitor.detections_received, diagnostics and (diagnostics.received, diagnostics.accounted))
        now = time.monotonic()
        if seen != last_seen:
            last_change, last_seen = now, seen
        if (diagnostics is not None and diagnostics.arrived >= replay_end + FRESH_DIAGNOSTICS_S
                and diagnostics.accounted >= diagnostics.received
                and monitor.detections_received >= diagnostics.published
                and (diagnostics.received >= frames_in or now - last_change >= STABLE_S)):
            return "all frames accounted for"
        if now - max(last_change, replay_end) >= idle_timeout_s:
            return "idle"
        time.sleep(0.1)


def _run_processes(options: DemoOptions, paths: DemoPaths, env: dict[str, str], drive: DriveBag,
                   timings: Timings, facts: dict[str, Any]) -> None:
    ros2 = use_ros2_bag(options.bag_tools)
    facts["bag_tools"] = "ros2 bag" if ros2 else "hybridnets_ros.ros.bag (player in-process, recorder process)"
    replay_s = len(drive.stamps) / options.rate
    with ChildProcesses() as children, GraphMonitor(env, CAMERA, OUTPUT_TOPICS[0]) as monitor:
        node = children.start("node", node_args(options.weights, drive.camera_pose), env, paths.logs / "node.log")
        LOG.info("waiting for the node to load its model and subscribe to %s", IMAGE_TOPIC)
        _wait_for(lambda: monitor.node.count_subscribers(IMAGE_TOPIC) > 0, NODE_START_TIMEOUT_S, [node],
                  f"subscription to {IMAGE_TOPIC} (node active)")
        timings.mark("node_start")

        recorder = children.start("recorder", recorder_args(ros2, paths.output_bag), env,
                                  paths.logs / "recorder.log")
        _wait_for(lambda: all(monitor.subscriber_nodes(t) for t in OUTPUT_TOPICS), RECORDER_START_TIMEOUT_S,
                  [recorder, node], "recorder subscribed to " + ", ".join(OUTPUT_TOPICS))
        timings.mark("recorder_start")

        LOG.info("replaying %d frames at %g Hz with /clock (%.1f s)", len(drive.stamps), options.rate, replay_s)
        replay_timeout_s = replay_s + PLAYER_WAIT_SUBSCRIBERS_S + 120.0
        if ros2:
            player = children.start("player", ros2_player_args(paths.input_bag), env, paths.logs / "player.log")
            _wait_for(lambda: not player.running(), replay_timeout_s, [node, recorder], "end of the replay")
            if player.returncode != 0:
                raise _fail("the replay failed", player)
        else:
            play_in_process(monitor, paths.input_bag, replay_timeout_s, [node, recorder])
        timings.mark("replay")

        facts["finished_because"] = wait_until_answered(monitor, node, len(drive.stamps), time.monotonic(),
                                                        options.idle_timeout_s)
        time.sleep(RECORDER_GRACE_S)
        facts["end_to_end_latency_ms"] = percentiles(monitor.end_to_end_latencies_ms())
        timings.mark("drain")
        for child in (recorder, node):
            code = child.stop()
            if code not in (0, -2):  # -2: ended by the SIGINT itself, which is a clean stop for a ROS process
                LOG.warning("%s exited with code %s; see %s", child.name, code, child.log_path)
        timings.mark("shutdown")
        facts["processes"] = children.pids


def build_summary(options: DemoOptions, paths: DemoPaths, drive: DriveBag, report: OutputReport,
                  facts: dict[str, Any], timings: Timings) -> dict[str, Any]:
    """summary.json: frame counts, detections, segmentation, ground-plane outputs, latency, model, timings and
    files."""
    input_stamps = set(drive.stamps)
    answered = [s for s in dict.fromkeys(report.detection_stamps) if s in input_stamps]
    per_frame = [n for s, n in zip(report.detection_stamps, report.detections_per_frame) if s in input_stamps]
    fractions = np.asarray(report.seg_fractions, dtype=np.float64).reshape(-1, len(report.seg_names))
    camera, model = report.camera_diagnostics, report.model_diagnostics

    def counter(key: str) -> int | None:
        return int(float(camera[key])) if key in camera else None

    def latency(key: str) -> float | None:
        value = float(camera.get(key, "nan"))
        return None if value != value else round(value, 1)

    return {
        "frames_in": len(drive.stamps),
        "frames_out": len(answered),
        "frames_dropped": len(drive.stamps) - len(answered),
        "outputs_without_input_stamp": len(report.detection_stamps) - len(per_frame),
        "node_counters": {k: counter(k) for k in ("received", "published", "dropped", "invalid", "failed")},
        "detections": {
            "total": int(sum(per_frame)),
            "per_frame_mean": round(float(np.mean(per_frame)), 2) if per_frame else 0.0,
            "per_frame_min": int(min(per_frame)) if per_frame else 0,
            "per_frame_max": int(max(per_frame)) if per_frame else 0,
            "per_frame": per_frame,
            "score_mean": round(float(np.mean(report.scores)), 3) if report.scores else None,
            "vehicles_in_scene_per_frame_mean": round(float(np.mean(drive.vehicles)), 2) if drive.vehicles else 0.0,
        },
        "segmentation": {
            "frames": len(report.segmentation_stamps),
            "mean_image_fraction": {name: round(float(fractions[:, k].mean()), 4) if len(fractions) else 0.0
                                    for k, name in enumerate(report.seg_names) if k > 0},
        },
        "ground": {"camera_pose": drive.camera_pose, **report.ground},
        "latency_ms": {
            "node_receive_to_publish": {"p50": latency("latency_p50_ms"), "p95": latency("latency_p95_ms")},
            "end_to_end_publish_to_detections": facts.get("end_to_end_latency_ms", percentiles([])),
        },
        "model": {k: model.get(k) for k in ("model", "weights", "backend", "device", "precision")},
        "finished_because": facts.get("finished_because"),
        "settings": {
            "frames": options.frames, "rate_hz": options.rate, "seed": options.seed,
            "size": list(options.size), "start_stamp_ns": START_NS, "topic": IMAGE_TOPIC,
            "weights": str(options.weights) if options.weights else "bundled",
            "ros_domain_id": int(facts["env"]["ROS_DOMAIN_ID"]), "bag_tools": facts.get("bag_tools"),
        },
        "overlay_video": {"frames": report.video_frames, "fps": options.rate,
                          "birdseye_panel_width": report.panel_width},
        "output_topics": report.topic_counts,
        "timings_s": timings.values,
        "processes": facts.get("processes", {}),
        "files": {
            "input_bag": str(paths.input_bag), "output_bag": str(paths.output_bag),
            "video": str(report.video) if report.video else None, "pngs": [str(p) for p in report.pngs],
            "summary": str(paths.summary), "logs": str(paths.logs),
        },
    }


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Run the whole demo; returns the summary (also written to summary.json). Raises DemoError on failure."""
    if options.frames < 1 or options.rate <= 0:
        raise DemoError("--frames must be at least 1 and --rate positive")
    try:
        weights = resolve_weights(options.weights, "--weights")
    except WeightsFileError as exc:
        raise DemoError(str(exc)) from exc
    # The node is given no weights for the bundled model, so that it reports (and the summary says) "bundled".
    options = dataclasses.replace(options, output=Path(options.output).expanduser().resolve(),
                                  weights=weights.resolve() if options.weights else None)
    timings = Timings()
    paths = DemoPaths(options.output)
    paths.prepare()
    env = demo_environment(paths.logs)
    facts: dict[str, Any] = {"env": env}
    LOG.info("ROS domain %s, DDS on localhost only; results in %s", env["ROS_DOMAIN_ID"], paths.root)

    LOG.info("rendering a %d-frame synthetic drive (%dx%d) into %s", options.frames, *options.size, paths.input_bag)
    drive = write_drive_bag(paths.input_bag, IMAGE_TOPIC, options.frames, options.rate, options.seed, options.size)
    timings.mark("render_and_write_input_bag")

    _run_processes(options, paths, env, drive, timings, facts)

    if not (paths.output_bag / "metadata.yaml").is_file():
        raise DemoError(f"the recorder left no bag at {paths.output_bag}; see {paths.logs / 'recorder.log'}")
    report = read_output_bag(paths.output_bag, CAMERA, paths.root, options.rate, drive.stamps, NUM_PNGS)
    timings.mark("report")
    timings.values["total"] = round(sum(timings.values.values()), 2)
    summary = build_summary(options, paths, drive, report, facts, timings)
    paths.summary.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
