"""make bench's sustained-rate table: one short real run through the node, the skip path and the table."""
from __future__ import annotations

import math

import pytest

from hybridnets_ros.ros.bench import (
    RealtimeConfig,
    format_image_output_costs,
    format_realtime,
    image_output_costs,
    realtime_configs,
    run_realtime,
)


def test_the_table_covers_old_default_auto_and_int8_serial_and_overlapped():
    configs = realtime_configs((1, 2))
    assert {(c.parameters["backend"], c.parameters["precision"]) for c in configs} == {
        ("torch", "fp32"), ("auto", "fp32"), ("auto", "int8")}
    assert {(c.cameras, c.overlap) for c in configs} == {(1, False), (1, True), (2, False), (2, True)}
    assert all(c.parameters["overlap_stages"] == c.overlap for c in configs)


def test_a_configuration_without_its_package_is_skipped_with_the_reason(tmp_path):
    config = RealtimeConfig("needs a missing package", {"backend": "torch"}, 1, False, needs="no_such_module_h4")
    result = run_realtime(config, "cpu", 64, 48, 5.0, 0.1, 0.1, False, tmp_path, 10.0)
    assert "no_such_module_h4" in result["skipped"]
    assert "skipped: needs the Python package 'no_such_module_h4'" in format_realtime([(config, result)], 64, 48, 5)


@pytest.mark.slow
def test_a_short_sustained_run_reports_rate_and_latency(ros_env, tmp_path):
    config = RealtimeConfig("torch", {"backend": "torch", "precision": "fp32", "overlap_stages": True}, 2, True)
    result = run_realtime(config, "cpu", 320, 240, 4.0, 3.0, 4.0, False, tmp_path, 120.0, env=ros_env)
    assert "error" not in result, result
    assert result["backend"] == "torch" and result["input_per_s"] > 0
    assert 0 < result["frames_per_s"] and 0 < result["answered_fraction"] <= 1, result
    for key in ("latency_p50_ms", "latency_p95_ms", "round_trip_p50_ms", "round_trip_p95_ms"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    table = format_realtime([(config, result)], 320, 240, 4.0)
    assert "torch" in table.splitlines()[-1] and "overlapped" in table.splitlines()[-1]


def test_image_output_costs_cover_every_image_output():
    costs = image_output_costs(320, 180, repeats=2)
    assert set(costs["parts"]) == {"class mask at original size", "drivable + lane masks", "overlay",
                                   "4 Image messages"}
    assert all(median >= fastest > 0 for median, fastest in costs["parts"].values())
    assert 0 <= costs["masked_percent"] <= 100
    assert "all together" in format_image_output_costs(costs, 320, 180)
