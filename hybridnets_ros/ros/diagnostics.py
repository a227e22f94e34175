"""Per-camera counters, latency windows and the ``/diagnostics`` message built from them.

All of it is plain Python fed by the node (callbacks and the inference thread) and read by its 1 Hz diagnostics
timer, hence the locks. Latency is measured from the subscription callback to the end of that frame's publishing
on the monotonic clock; "overhead" is that latency minus the forward pass of the frame's batch, i.e. what the
node (conversion, waiting, pre/post-processing, publishing) adds to the network itself; "ros" is the latency minus
the whole pipeline call (pre-processing, forward, post-processing): the ROS side alone (conversion, hand-off to
the inference thread, building and publishing the messages).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

LATENCY_WINDOW = 100  # frames kept for the percentiles: long enough for a stable p95, short enough to follow changes
# Transport loss seen in the input stamps: the publisher's period is the 10th percentile of the recent steps between
# consecutive stamps (robust to jitter and to most steps spanning lost frames); a step of k periods means k - 1 frames
# never arrived. Warned once when more than this fraction is missing, after this many stamped frames.
STAMP_WINDOW = 100
LOSS_WARNING_FRACTION = 0.05
LOSS_WARNING_MIN_FRAMES = 20


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) of ``values``, NaN when empty."""
    data = np.fromiter(values, dtype=np.float64)
    return float(np.percentile(data, q)) if data.size else float("nan")


class CameraStats:
    """Counters and rolling windows of one camera."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.published = 0
        self.dropped_replaced = 0
        self.dropped_stale = 0
        self.invalid = 0
        self.failed = 0
        self.latency_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.overhead_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.ros_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._last_report = (time.monotonic(), 0, 0, 0)
        self.received_stamped = 0
        self.missed_by_stamps = 0
        self._stamp_steps: deque[int] = deque(maxlen=STAMP_WINDOW)
        self._last_stamp = 0
        self._loss_warned = False

    def count(self, what: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``what`` (received, dropped_replaced, dropped_stale, invalid, failed)."""
        with self._lock:
            setattr(self, what, getattr(self, what) + n)

    def add_stamp(self, stamp_ns: int) -> bool:
        """Record the stamp of a received frame (0 = unstamped: ignored) and count the frames its step from the
        previous stamp implies were lost. True exactly once: when the loss first exceeds LOSS_WARNING_FRACTION."""
        if stamp_ns <= 0:
            return False
        with self._lock:
            step = stamp_ns - self._last_stamp
            if self._last_stamp and step > 0:  # a stamp going back (a looping bag) starts a new sequence
                self._stamp_steps.append(step)
                period = float(np.percentile(np.fromiter(self._stamp_steps, np.float64), 10))
                self.missed_by_stamps += max(round(step / period) - 1, 0)
            self._last_stamp = stamp_ns
            self.received_stamped += 1
            total = self.received_stamped + self.missed_by_stamps
            if (self._loss_warned or self.received_stamped < LOSS_WARNING_MIN_FRAMES
                    or self.missed_by_stamps <= LOSS_WARNING_FRACTION * total):
                return False
            self._loss_warned = True
            return True

    def stamp_report(self) -> dict[str, float]:
        """Stamped frames received, frames their stamps imply were lost, and the publisher's rate those stamps
        imply (Hz; NaN before two stamps)."""
        with self._lock:
            period_ns = float(np.percentile(np.fromiter(self._stamp_steps, np.float64), 10)) if self._stamp_steps \
                else float("nan")
            return {"received_stamped": self.received_stamped, "missed_by_stamps": self.missed_by_stamps,
                    "stamp_rate_hz": 1e9 / period_ns}

    def add_published(self, latency_ms: float, forward_ms: float, pipeline_ms: float) -> None:
        """A frame's outputs are out: its latency, its batch's forward time and whole pipeline call (ms)."""
        with self._lock:
            self.published += 1
            self.latency_ms.append(latency_ms)
            self.overhead_ms.append(latency_ms - forward_ms)
            self.ros_ms.append(latency_ms - pipeline_ms)

    def report(self) -> dict[str, float]:
        """Totals, rates since the previous report, transport loss seen in the stamps (``stamp_report``) and latency
        percentiles (ms) as a flat dict."""
        stamps = self.stamp_report()
        with self._lock:
            now = time.monotonic()
            then, received, published, invalid = self._last_report
            elapsed = max(now - then, 1e-6)
            self._last_report = (now, self.received, self.published, self.invalid)
            return {
                "input_rate_hz": (self.received - received) / elapsed,
                "output_rate_hz": (self.published - published) / elapsed,
                "received": self.received,
                "published": self.published,
                "dropped": self.dropped_replaced + self.dropped_stale,
                "dropped_replaced": self.dropped_replaced,
                "dropped_stale": self.dropped_stale,
                "invalid": self.invalid,
                "invalid_since_last_report": self.invalid - invalid,
                "failed": self.failed,
                **stamps,
                "latency_p50_ms": percentile(self.latency_ms, 50),
                "latency_p95_ms": percentile(self.latency_ms, 95),
                "overhead_p50_ms": percentile(self.overhead_ms, 50),
                "overhead_p95_ms": percentile(self.overhead_ms, 95),
                "ros_p50_ms": percentile(self.ros_ms, 50),
                "ros_p95_ms": percentile(self.ros_ms, 95),
            }


class ModelStats:
    """What the last forward passes looked like."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.batches = 0
        self.last_batch_size = 0
        self.forward_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.pre_post_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def add_batch(self, size: int, timings_ms: dict[str, float]) -> None:
        """A forward pass over ``size`` frames with the pipeline's timings (preprocess, forward, postprocess)."""
        with self._lock:
            self.batches += 1
            self.last_batch_size = size
            self.forward_ms.append(timings_ms["forward"])
            self.pre_post_ms.append(timings_ms["preprocess"] + timings_ms["postprocess"])

    def report(self) -> dict[str, float]:
        with self._lock:
            return {
                "batches": self.batches,
                "batch_size": self.last_batch_size,
                "forward_p50_ms": percentile(self.forward_ms, 50),
                "forward_p95_ms": percentile(self.forward_ms, 95),
                "pre_post_processing_p50_ms": percentile(self.pre_post_ms, 50),
                "pre_post_processing_p95_ms": percentile(self.pre_post_ms, 95),
            }


@dataclass(frozen=True)
class ModelInfo:
    """Static facts about the loaded model for the diagnostics."""

    model: str
    weights: str
    backend: str
    device: str
    precision: str
    backend_selection: str = "requested"  # why this backend runs: requested, or backend auto's reason


def _format(value: object) -> str:
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.2f}"
    return str(value)


def _status(name: str, hardware_id: str, level: bytes, message: str, values: dict[str, object]) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=_format(v)) for k, v in values.items()],
    )


def camera_status(node_name: str, camera: str, report: dict[str, float]) -> DiagnosticStatus:
    """WARN while invalid frames arrive, OK otherwise (drops under load are by design, not a fault)."""
    if report["invalid_since_last_report"]:
        level, message = DiagnosticStatus.WARN, f"{report['invalid_since_last_report']} invalid input frames"
    elif report["received"] == 0:
        level, message = DiagnosticStatus.OK, "waiting for images"
    else:
        level, message = DiagnosticStatus.OK, "ok"
    return _status(f"{node_name}: camera {camera}", node_name, level, message, report)


def model_status(node_name: str, info: ModelInfo, report: dict[str, float]) -> DiagnosticStatus:
    values = {
        "model": info.model,
        "weights": info.weights,
        "backend": info.backend,
        "backend_selection": info.backend_selection,
        "device": info.device,
        "precision": info.precision,
        **report,
    }
    return _status(f"{node_name}: model", node_name, DiagnosticStatus.OK, "ok", values)


def diagnostic_array(stamp: object, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = statuses
    return msg


def status_values(status: DiagnosticStatus) -> dict[str, str]:
    """The key/value pairs of a status as a dict (for readers of ``/diagnostics``)."""
    return {kv.key: kv.value for kv in status.values}


class WarningLimiter:
    """At most one warning per key and period; counts what it held back so the next warning can say so."""

    def __init__(self, period_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> int | None:
        """None when this warning must be held back, else how many of its kind were held back since the last one."""
        with self._lock:
            now = self._clock()
            last = self._last.get(key)
            if last is not None and now - last < self._period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)
