"""An rclpy observer of the demo's ROS graph, in this process and its own context, spun on a background thread
(``BackgroundNode``).

It answers the questions the demo waits on (is the node subscribed to its camera, has the recorder joined every
output topic, have all frames been answered) and measures the end-to-end latency of each frame: the wall time
its detections arrive here minus the wall time the player published it. The publish time comes from ``/clock``:
a replayer publishes bag time on ``/clock``, each message's own timestamp just before the message (the project's
player exactly, ``ros2 bag play`` at its clock rate), so the first ``/clock`` value at or after a frame's stamp
marks when it went out.
"""
from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from vision_msgs.msg import Detection2DArray

from hybridnets_ros.ros.diagnostics import status_values
from hybridnets_ros.testing.background_node import BackgroundNode

MONITOR_NAME = "hybridnets_demo_monitor"
NANOSECONDS = 1_000_000_000
DETECTIONS_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# Best effort matches every /clock publisher (rclcpp's clock QoS is best effort, the project's player reliable).
CLOCK_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)


def _stamp_ns(stamp) -> int:
    return stamp.sec * NANOSECONDS + stamp.nanosec


@dataclass(frozen=True)
class CameraDiagnostics:
    """The newest ``/diagnostics`` status of the camera: when it arrived (monotonic s) and its integer counters."""

    arrived: float
    received: int
    published: int
    dropped: int
    invalid: int
    failed: int

    @property
    def accounted(self) -> int:
        """Frames the node has finished with, one way or another."""
        return self.published + self.dropped + self.invalid + self.failed


class GraphMonitor(BackgroundNode):
    """Watches ``detections_topic``, ``/diagnostics`` (status of ``camera``) and ``/clock`` on domain ``env``."""

    def __init__(self, env: Mapping[str, str], camera: str, detections_topic: str) -> None:
        self.camera = camera
        self._lock = threading.Lock()
        self._detections: list[tuple[int, float, int]] = []  # (stamp ns, arrival, number of boxes)
        self._clock_ns: list[int] = []
        self._clock_wall: list[float] = []
        self._camera_diagnostics: CameraDiagnostics | None = None
        super().__init__(env, MONITOR_NAME)
        self.node.create_subscription(Detection2DArray, detections_topic, self._on_detections, DETECTIONS_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.node.create_subscription(Clock, "/clock", self._on_clock, CLOCK_QOS)

    # ---- callbacks --------------------------------------------------------------------------------------------

    def _on_detections(self, msg: Detection2DArray) -> None:
        with self._lock:
            self._detections.append((_stamp_ns(msg.header.stamp), time.monotonic(), len(msg.detections)))

    def _on_clock(self, msg: Clock) -> None:
        value = _stamp_ns(msg.clock)
        with self._lock:
            if not self._clock_ns or value > self._clock_ns[-1]:
                self._clock_ns.append(value)
                self._clock_wall.append(time.monotonic())

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        suffix = f": camera {self.camera}"
        for status in msg.status:
            if status.name.endswith(suffix):
                values = status_values(status)
                counters = {k: int(float(values.get(k, "0"))) for k in
                            ("received", "published", "dropped", "invalid", "failed")}
                with self._lock:
                    self._camera_diagnostics = CameraDiagnostics(arrived=time.monotonic(), **counters)

    # ---- graph ------------------------------------------------------------------------------------------------

    def subscriber_nodes(self, topic: str) -> list[str]:
        """Names of the nodes other than this monitor that subscribe to ``topic``."""
        return [info.node_name for info in self.node.get_subscriptions_info_by_topic(topic)
                if info.node_name != MONITOR_NAME]

    # ---- what arrived -----------------------------------------------------------------------------------------

    @property
    def detections_received(self) -> int:
        with self._lock:
            return len(self._detections)

    @property
    def last_detection_at(self) -> float | None:
        with self._lock:
            return self._detections[-1][1] if self._detections else None

    @property
    def camera_diagnostics(self) -> CameraDiagnostics | None:
        with self._lock:
            return self._camera_diagnostics

    def end_to_end_latencies_ms(self) -> list[float]:
        """Per answered frame: detections arrival here minus the frame's publish time (from /clock), in ms."""
        with self._lock:
            detections = list(self._detections)
            clock_ns, clock_wall = list(self._clock_ns), list(self._clock_wall)
        latencies = []
        for stamp, arrived, _ in detections:
            k = bisect.bisect_left(clock_ns, stamp)
            if k < len(clock_ns):
                latencies.append((arrived - clock_wall[k]) * 1000.0)
        return latencies
