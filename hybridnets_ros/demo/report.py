"""What the node answered, read back from the output bag: overlay video and PNGs (the camera overlay with the
bird's-eye panel of the ground-plane outputs beside it), and the numbers of the summary.

Messages are deserialised with rclpy (``vision_msgs`` comes from the project's set-up or the ROS install), one at a
time, so a long recording never sits in memory.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader

from hybridnets_ros.demo.birdseye import PanelView, grid_bounds, grid_values, render_panel
from hybridnets_ros.ros.bag import message_class
from hybridnets_ros.ros.conversions import DETECTION_CLASS_ID_OFFSET, image_to_array
from hybridnets_ros.ros.diagnostics import status_values

NANOSECONDS = 1_000_000_000
VIDEO_FOURCC = "mp4v"
# Segmentation class names when the bag holds no label_info (the bundled and the pretrained models' classes).
DEFAULT_SEG_NAMES = ("background", "road", "lane")
# The panel's ground rectangle when the bag holds no grid (config/hybridnets.yaml's ground.x_range, ground.y_range).
DEFAULT_VIEW = (0.0, 50.0, -15.0, 15.0)


def stamp_ns(header: Any) -> int:
    return header.stamp.sec * NANOSECONDS + header.stamp.nanosec


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """{"p50", "p95"} of ``values`` (None when there are none)."""
    if not len(values):
        return {"p50": None, "p95": None}
    data = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(data, 50)), 1), "p95": round(float(np.percentile(data, 95)), 1)}


def _messages(reader: Reader, topic: str) -> Iterator[tuple[int, Any]]:
    """(bag timestamp, rclpy message) of every message on ``topic``, in bag order."""
    connections = [c for c in reader.connections if c.topic == topic]
    if not connections:
        return
    cls = message_class(connections[0].msgtype)
    for _, timestamp, raw in reader.messages(connections=connections):
        yield timestamp, deserialize_message(bytes(raw), cls)


def _message_count(reader: Reader, topic: str) -> int:
    return sum(c.msgcount for c in reader.connections if c.topic == topic)


def pick_evenly(count: int, wanted: int) -> list[int]:
    """Up to ``wanted`` distinct indices spread evenly over ``range(count)``, first and last included."""
    if count <= 0 or wanted <= 0:
        return []
    return sorted({int(round(v)) for v in np.linspace(0, count - 1, min(wanted, count))})


@dataclass
class OutputReport:
    """The node's answers as found in the output bag (``stamps``: the input stamps they carry, bag order)."""

    topic_counts: dict[str, int] = field(default_factory=dict)
    detection_stamps: list[int] = field(default_factory=list)
    detections_per_frame: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    segmentation_stamps: list[int] = field(default_factory=list)
    seg_names: list[str] = field(default_factory=lambda: list(DEFAULT_SEG_NAMES))  # by class ID, 0 = background
    seg_fractions: list[list[float]] = field(default_factory=list)  # per frame: fraction of pixels per class ID
    pngs: list[Path] = field(default_factory=list)
    video: Path | None = None
    video_frames: int = 0
    camera_diagnostics: dict[str, str] = field(default_factory=dict)
    model_diagnostics: dict[str, str] = field(default_factory=dict)
    class_map: dict[int, str] = field(default_factory=dict)
    ground: dict[str, Any] = field(default_factory=dict)  # grid and detections_3d statistics (see _read_ground)
    panel_width: int = 0  # px of the bird's-eye panel right of each overlay


class _ByStamp:
    """One topic's messages looked up by input stamp, asked for in increasing order (the node answers a camera's
    frames in order): one message in memory at a time."""

    def __init__(self, messages: Iterator[tuple[int, Any]], header: Callable[[Any], Any]) -> None:
        self._messages = messages
        self._header = header
        self._pending: Any | None = None

    def at(self, stamp: int) -> Any | None:
        """The message stamped ``stamp``, or None; messages stamped earlier are passed over."""
        while True:
            if self._pending is None:
                self._pending = next(self._messages, (None, None))[1]
                if self._pending is None:
                    return None
            pending = stamp_ns(self._header(self._pending))
            if pending >= stamp:
                return self._pending if pending == stamp else None
            self._pending = None


def _marker_header(msg: Any) -> Any:
    """A MarkerArray's stamp is its first marker's (the node always sends a DELETEALL first)."""
    return msg.markers[0].header


def _read_detections(reader: Reader, topic: str, report: OutputReport) -> None:
    for _, msg in _messages(reader, topic):
        report.detection_stamps.append(stamp_ns(msg.header))
        report.detections_per_frame.append(len(msg.detections))
        report.scores.extend(d.results[0].hypothesis.score for d in msg.detections if d.results)


def _read_segmentation(reader: Reader, topic: str, report: OutputReport) -> None:
    num_classes = len(report.seg_names)
    for _, msg in _messages(reader, topic):
        mask = image_to_array(msg)[:, :, 0]
        counts = np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]
        report.segmentation_stamps.append(stamp_ns(msg.header))
        report.seg_fractions.append((counts / mask.size).round(4).tolist())


def _read_ground(reader: Reader, camera: str, report: OutputReport) -> tuple[float, float, float, float]:
    """Statistics of the grids and ground contacts in the bag into ``report.ground``; the ground rectangle the
    grids cover (``DEFAULT_VIEW`` without one)."""
    seen, drivable, bounds = [], [], DEFAULT_VIEW
    for _, msg in _messages(reader, f"/{camera}/drivable_area/grid"):
        values = grid_values(msg)
        seen.append(float(np.mean(values != -1)))
        drivable.append(float(np.sum(values == 0) / max(np.sum(values != -1), 1)))
        bounds = grid_bounds(msg)
    placed, nearest = [], []
    for _, msg in _messages(reader, f"/{camera}/detections_3d"):
        placed.append(len(msg.detections))
        distances = [np.hypot(d.results[0].pose.pose.position.x, d.results[0].pose.pose.position.y)
                     for d in msg.detections]
        nearest.extend([min(distances)] if distances else [])
    lines = [sum(m.type == m.LINE_STRIP for m in msg.markers)
             for _, msg in _messages(reader, f"/{camera}/lane_lines/polylines")]

    def mean(values: list[float], digits: int) -> float | None:
        return round(float(np.mean(values)), digits) if values else None

    report.ground = {
        "frames_with_grid": len(seen),
        "grid_seen_share_mean": mean(seen, 4),
        "grid_drivable_share_of_seen_mean": mean(drivable, 4),
        "frames_with_detections_3d": len(placed),
        "vehicles_placed_per_frame_mean": mean(placed, 2),
        "nearest_vehicle_m_median": round(float(np.median(nearest)), 2) if nearest else None,
        "frames_with_lane_lines": len(lines),
        "lane_lines_per_frame_mean": mean(lines, 2),
    }
    return bounds


def _write_overlays(reader: Reader, camera: str, report: OutputReport, out_dir: Path, fps: float,
                    input_stamps: Sequence[int], num_pngs: int,
                    bounds: tuple[float, float, float, float]) -> None:
    """The overlays, each with the bird's-eye panel of its frame's grid, lane lines and ground contacts beside it
    (the ground rectangle ``bounds``, as tall as the overlay), as ``overlay.mp4`` in real time, and ``num_pngs`` of
    them, spread over the drive, as PNGs named after the input frame they show.

    The video has one frame per input frame from the first answered one on: each answer is shown until the next
    one, as a viewer of the overlay topic sees it, so frames the node dropped do not speed the video up.
    """
    topic = f"/{camera}/overlay"
    grids = _ByStamp(_messages(reader, f"/{camera}/drivable_area/grid"), lambda m: m.header)
    contacts = _ByStamp(_messages(reader, f"/{camera}/detections_3d"), lambda m: m.header)
    lanes = _ByStamp(_messages(reader, f"/{camera}/lane_lines/polylines"), _marker_header)
    chosen = set(pick_evenly(_message_count(reader, topic), num_pngs))
    frame_index = {stamp: i for i, stamp in enumerate(input_stamps)}
    writer = None
    shown: tuple[int, np.ndarray] | None = None  # (input frame index, overlay) waiting for the next answer
    view: PanelView | None = None

    def hold(image: np.ndarray, frames: int) -> None:
        for _ in range(frames):
            writer.write(image)
        report.video_frames += frames

    try:
        for k, (_, msg) in enumerate(_messages(reader, topic)):
            stamp = stamp_ns(msg.header)
            index = frame_index.get(stamp)
            if index is None:  # not an answer to this drive
                continue
            overlay = image_to_array(msg)
            if view is None:
                view = PanelView(*bounds, overlay.shape[0])
                report.panel_width = view.width
            panel = render_panel(view, grids.at(stamp), contacts.at(stamp), lanes.at(stamp))
            image = np.ascontiguousarray(np.concatenate([overlay, panel], axis=1))
            if writer is None:
                report.video = out_dir / "overlay.mp4"
                writer = cv2.VideoWriter(str(report.video), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), fps,
                                         (image.shape[1], image.shape[0]))
                if not writer.isOpened():
                    raise OSError(f"cannot write {report.video}: OpenCV has no {VIDEO_FOURCC} encoder here")
            if shown is not None:
                hold(shown[1], index - shown[0])
            shown = (index, image)
            if k in chosen:
                png = out_dir / f"overlay_frame{index:03d}.png"
                if not cv2.imwrite(str(png), image):
                    raise OSError(f"cannot write {png}")
                report.pngs.append(png)
        if shown is not None:
            hold(shown[1], len(input_stamps) - shown[0])
    finally:
        if writer is not None:
            writer.release()


def _read_diagnostics(reader: Reader, camera: str, report: OutputReport) -> None:
    """The newest camera and model statuses (they hold the node's totals and latency percentiles)."""
    for _, msg in _messages(reader, "/diagnostics"):
        for status in msg.status:
            if status.name.endswith(f": camera {camera}"):
                report.camera_diagnostics = status_values(status)
            elif status.name.endswith(": model"):
                report.model_diagnostics = status_values(status)


def _read_label_info(reader: Reader, topic: str, report: OutputReport) -> None:
    for _, msg in _messages(reader, topic):
        report.class_map = {int(c.class_id): c.class_name for c in msg.class_map}
    seg_ids = sorted(k for k in report.class_map if k < DETECTION_CLASS_ID_OFFSET)
    if seg_ids == list(range(len(seg_ids))) and seg_ids:
        report.seg_names = [report.class_map[k] for k in seg_ids]


def read_output_bag(path: Path, camera: str, out_dir: Path, fps: float, input_stamps: Sequence[int],
                    num_pngs: int = 4) -> OutputReport:
    """Read the recorded outputs of ``camera`` (topics ``/<camera>/...``, ``/diagnostics``, ``/label_info``), write
    ``overlay.mp4`` at ``fps`` and ``num_pngs`` overlay PNGs into ``out_dir``, each with its bird's-eye panel."""
    report = OutputReport()
    with Reader(path) as reader:
        report.topic_counts = {c.topic: _message_count(reader, c.topic) for c in reader.connections}
        _read_label_info(reader, "/label_info", report)
        _read_detections(reader, f"/{camera}/detections", report)
        _read_segmentation(reader, f"/{camera}/segmentation", report)
        bounds = _read_ground(reader, camera, report)
        _write_overlays(reader, camera, report, out_dir, fps, input_stamps, num_pngs, bounds)
        _read_diagnostics(reader, camera, report)
    return report
