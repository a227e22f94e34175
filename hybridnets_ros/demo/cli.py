"""Command line of the demo: ``python -m hybridnets_ros.demo`` (what ``make demo`` runs after ``make setup``)."""
from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hybridnets_ros.cli_support import EXIT_FAILURE, EXIT_OK, configure_logging
from hybridnets_ros.demo.run import DEFAULT_IDLE_TIMEOUT_S, DemoError, DemoOptions, run_demo

DESCRIPTION = """\
Render a short synthetic drive (1280x720) into a rosbag2 file, run the hybridnets node on it (its real executable,
use_sim_time, bundled model unless --weights), replay the bag with /clock, record the node's outputs into a second
bag, and write an overlay video, overlay PNGs and summary.json. Every ROS process stays on this host
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) in its own ROS_DOMAIN_ID (the environment's, else a random one)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hybridnets_ros.demo", description=DESCRIPTION,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("demo_output"), help="results folder (created); "
                        "results of an earlier demo run in it are replaced")
    parser.add_argument("--frames", type=int, default=40, help="frames in the drive")
    parser.add_argument("--rate", type=float, default=5.0, help="frame rate of the drive and its replay (Hz)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="checkpoint for the node (default: the bundled models/hybridnets_d0_synth.pt)")
    parser.add_argument("--seed", type=int, default=3, help="seed of the synthetic drive")
    parser.add_argument("--bag-tools", choices=("auto", "ros2", "project"), default="auto",
                        help="replay/record with `ros2 bag` (auto: when `ros2` is on PATH) or the project's "
                             "python -m hybridnets_ros.ros.bag")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S,
                        help="after the replay, stop once no output arrived for this many seconds")
    return parser


def _raise_system_exit(signum: int, _frame: Any) -> None:
    # SIGTERM/SIGHUP end the demo like Ctrl-C does: through the `finally`s that stop every child process.
    raise SystemExit(128 + signum)


def _percent(fraction: float) -> str:
    return f"{100.0 * fraction:.1f} %"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _ground(ground: dict[str, Any], frames: int) -> str:
    """One line on the grid and the vehicles' ground contacts."""
    if not ground.get("frames_with_grid"):
        return "no drivable grid received (see logs/node.log)"
    nearest = ground.get("nearest_vehicle_m_median")
    return (f"grid in {ground['frames_with_grid']} of {frames} frames, {_percent(ground['grid_seen_share_mean'])} "
            f"of its cells seen, {_percent(ground['grid_drivable_share_of_seen_mean'])} of those drivable; "
            f"{ground['vehicles_placed_per_frame_mean'] or 0:.1f} vehicles placed per frame"
            + (f", nearest {nearest:.1f} m (median)" if nearest is not None else ""))


def format_summary(summary: dict[str, Any]) -> str:
    """The printed summary: the numbers of summary.json that matter, and where the files are."""
    settings, det, files = summary["settings"], summary["detections"], summary["files"]
    model, node = summary["model"], summary["node_counters"]
    latency, video = summary["latency_ms"], summary["overlay_video"]
    node_latency, e2e = latency["node_receive_to_publish"], latency["end_to_end_publish_to_detections"]
    segmentation = ", ".join(f"{name} {_percent(v)}" for name, v in summary["segmentation"]["mean_image_fraction"]
                             .items())
    width, height = settings["size"]
    lines = [
        f"HybridNets demo: {summary['frames_in']} synthetic {width}x{height} frames at {settings['rate_hz']:g} Hz "
        f"through the node (model {model.get('model')}, weights {model.get('weights')}, on {model.get('device')})",
        f"  frames in / out / dropped : {summary['frames_in']} / {summary['frames_out']} / "
        f"{summary['frames_dropped']}   (node: received {node['received']}, published {node['published']}, "
        f"dropped {node['dropped']})",
        f"  detections per frame      : mean {det['per_frame_mean']:.2f}, min {det['per_frame_min']}, max "
        f"{det['per_frame_max']}  (vehicles in the scenes: {det['vehicles_in_scene_per_frame_mean']:.2f} per frame)",
        f"  segmentation (image share): {segmentation}",
        f"  ground plane              : {_ground(summary['ground'], summary['frames_in'])}",
        f"  latency, in the node      : p50 {_ms(node_latency['p50'])}, p95 {_ms(node_latency['p95'])} "
        "(receive -> publish, /diagnostics)",
        f"  latency, end to end       : p50 {_ms(e2e['p50'])}, p95 {_ms(e2e['p95'])} (player publish -> detections "
        "received)",
        "  time                      : " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["timings_s"].items()),
        f"files in {Path(files['summary']).parent}:",
        f"  input bag   {files['input_bag']}",
        f"  output bag  {files['output_bag']}",
        f"  video       {files['video']} ({video['frames']} frames at {video['fps']:g} fps: real time, each "
        "answer shown until the next; bird's-eye panel of the grid on the right)",
        *(f"  overlay     {png}" for png in files["pngs"]),
        f"  summary     {files['summary']}",
        f"  logs        {files['logs']}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit codes as :mod:`hybridnets_ros.cli_support` says, 130 when interrupted. The demo's progress
    is its output (stdout, where its tests and users follow the started processes); a failure goes to stderr."""
    args = build_parser().parse_args(argv)
    configure_logging(stream="stdout")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_system_exit)
    options = DemoOptions(output=args.output, frames=args.frames, rate=args.rate, weights=args.weights,
                          seed=args.seed, bag_tools=args.bag_tools, idle_timeout_s=args.idle_timeout)
    try:
        summary = run_demo(options)
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("demo interrupted: every process it started has been stopped", file=sys.stderr)
        return 128 + signal.SIGINT
    print(format_summary(summary), flush=True)
    return EXIT_OK
