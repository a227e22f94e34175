"""Counters, percentiles, diagnostics statuses and the warning limiter of the node (no ROS graph)."""
from __future__ import annotations

import math

from diagnostic_msgs.msg import DiagnosticStatus

from hybridnets_ros.ros import diagnostics


def test_percentile() -> None:
    assert diagnostics.percentile(range(101), 50) == 50.0
    assert diagnostics.percentile(range(101), 95) == 95.0
    assert math.isnan(diagnostics.percentile([], 50))


def test_camera_report_counts_rates_and_latencies() -> None:
    stats = diagnostics.CameraStats()
    stats.count("received", 10)
    stats.count("dropped_replaced", 3)
    stats.count("dropped_stale", 1)
    stats.count("invalid", 2)
    for latency in (100.0, 200.0, 300.0):
        stats.add_published(latency, forward_ms=80.0, pipeline_ms=90.0)
    report = stats.report()
    assert (report["received"], report["published"], report["dropped"], report["invalid"]) == (10, 3, 4, 2)
    assert report["latency_p50_ms"] == 200.0
    assert report["overhead_p50_ms"] == 120.0
    assert report["ros_p50_ms"] == 110.0
    assert report["input_rate_hz"] > 0 and report["invalid_since_last_report"] == 2
    assert stats.report()["invalid_since_last_report"] == 0  # rates and "since last" restart at every report


def test_latency_window_is_bounded() -> None:
    stats = diagnostics.CameraStats()
    for i in range(10 * diagnostics.LATENCY_WINDOW):
        stats.add_published(float(i), 0.0, 0.0)
    assert len(stats.latency_ms) == diagnostics.LATENCY_WINDOW
    assert stats.report()["latency_p50_ms"] > 9 * diagnostics.LATENCY_WINDOW - 1


def test_camera_status_warns_only_on_invalid_input() -> None:
    stats = diagnostics.CameraStats()
    stats.count("received", 5)
    stats.count("dropped_replaced", 4)
    ok = diagnostics.camera_status("/hybridnets", "front", stats.report())
    assert ok.level == DiagnosticStatus.OK and ok.name == "/hybridnets: camera front"
    stats.count("invalid")
    warn = diagnostics.camera_status("/hybridnets", "front", stats.report())
    assert warn.level == DiagnosticStatus.WARN and "invalid" in warn.message
    assert diagnostics.status_values(warn)["dropped"] == "4"


def test_model_status_has_backend_device_precision_and_batch() -> None:
    model = diagnostics.ModelStats()
    model.add_batch(2, {"preprocess": 5.0, "forward": 50.0, "postprocess": 7.0})
    info = diagnostics.ModelInfo("m", "w.pt", "torch", "cpu", "fp32")
    values = diagnostics.status_values(diagnostics.model_status("/hybridnets", info, model.report()))
    assert values["backend"] == "torch" and values["device"] == "cpu" and values["precision"] == "fp32"
    assert values["batch_size"] == "2" and values["forward_p50_ms"] == "50.00"
    assert values["pre_post_processing_p50_ms"] == "12.00"


def test_warning_limiter_per_key_with_held_back_count() -> None:
    now = [0.0]
    limiter = diagnostics.WarningLimiter(period_s=5.0, clock=lambda: now[0])
    assert limiter.allow("cam/encoding") == 0
    assert limiter.allow("cam/encoding") is None
    assert limiter.allow("cam/length") == 0  # another reason is not held back by the first
    now[0] = 6.0
    assert limiter.allow("cam/encoding") == 1
