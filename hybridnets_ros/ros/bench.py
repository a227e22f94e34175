"""Node benchmarks: ``python -m hybridnets_ros.ros.bench`` (``make bench``).

Default: the sustained-rate table. The node runs as its real executable in a subprocess (``NodeProcess``) with the
bundled model; this process feeds 1280x720 frames to one or two cameras at a fixed rate through a ``NodeProbe``,
subscribes to the detections and every image output (so the node builds them), and reports outputs per second,
the node's receive -> publish latency (its ``/diagnostics``) and the client's round trip, for the old default
(eager torch), ``backend: auto`` fp32 and int8, serial and overlapped stages.

``--overhead``: frames one at a time (the next only after the previous frame's detections came back, so nothing
queues); the node's receive -> publish latency, forward time and their difference, the overhead the node adds to
the network (conversion, batching hand-off, pre/post-processing, building and publishing messages).
The node and the probe are the test harness's (``hybridnets_ros.testing``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from hybridnets_ros.ros import conversions
from hybridnets_ros.testing.checkpoints import random_checkpoint
from hybridnets_ros.testing.environment import ros_environment
from hybridnets_ros.testing.frames import synthetic_frame, unique_header
from hybridnets_ros.testing.probe import IMAGE_OUTPUTS, OUTPUT_QOS, NodeProbe, running_node


def _float(values: Mapping[str, str], key: str) -> float:
    return float(values.get(key, "nan"))


def run_bench(weights: Path, frames: int, width: int, height: int, overlay: bool, log_dir: Path,
              device: str, timeout: float) -> dict[str, float]:
    env = ros_environment()
    env["ROS_LOG_DIR"] = str(log_dir)
    parameters = {"weights": str(weights), "device": device, "input_qos": "reliable", "max_batch_wait_ms": 0}
    image = synthetic_frame(height, width)
    round_trip_ms = []
    with running_node(env, log_dir, parameters, {"overlay": overlay, "label_info": False}, timeout=timeout) as (
        node, probe
    ):
        for _ in range(frames):
            header = unique_header()
            sent = time.monotonic()
            probe.publish("camera", conversions.array_to_image(image, header, "bgr8"))
            if probe.wait_for_output("camera/detections", header, timeout) is None:
                raise RuntimeError(f"no detections for a frame within {timeout:.0f} s; node output:\n{node.log()}")
            round_trip_ms.append((probe.arrival("camera/detections", header) - sent) * 1000.0)
        camera = probe.wait_for_diagnostics(": camera camera", 5.0, lambda v: int(v["published"]) >= frames)
        model = probe.diagnostics(": model")
    if camera is None or model is None:
        raise RuntimeError("no diagnostics from the node after the frames")
    return {
        "latency_p50_ms": _float(camera, "latency_p50_ms"), "latency_p95_ms": _float(camera, "latency_p95_ms"),
        "forward_p50_ms": _float(model, "forward_p50_ms"), "forward_p95_ms": _float(model, "forward_p95_ms"),
        "overhead_p50_ms": _float(camera, "overhead_p50_ms"), "overhead_p95_ms": _float(camera, "overhead_p95_ms"),
        "pre_post_p50_ms": _float(model, "pre_post_processing_p50_ms"),
        "pre_post_p95_ms": _float(model, "pre_post_processing_p95_ms"),
        "ros_p50_ms": _float(camera, "ros_p50_ms"), "ros_p95_ms": _float(camera, "ros_p95_ms"),
        "round_trip_p50_ms": float(np.percentile(round_trip_ms, 50)),
        "round_trip_p95_ms": float(np.percentile(round_trip_ms, 95)),
        "model": model.get("model", "?"), "device": model.get("device", "?"), "backend": model.get("backend", "?"),
        "precision": model.get("precision", "?"),
    }


def format_report(result: Mapping[str, Any], frames: int, width: int, height: int, overlay: bool) -> str:
    rows = [
        ("receive -> publish, in the node", "latency"),
        ("forward pass (network only)", "forward"),
        ("node overhead = latency - forward", "overhead"),
        ("  of it: pipeline pre/post-processing", "pre_post"),
        ("  of it: ROS side (convert, hand-off, publish)", "ros"),
        ("client publish -> detections received", "round_trip"),
    ]
    outputs = "detections, segmentation, both masks" + (", overlay" if overlay else "")
    lines = [
        f"hybridnets node overhead: {frames} frames {width}x{height} bgr8, one at a time, 1 camera; "
        f"subscribed: {outputs}",
        f"model {result['model']} on {result['device']} / {result['precision']} / {result['backend']}",
        f"{'':48s}{'p50 ms':>10s}{'p95 ms':>10s}",
    ]
    lines += [f"{label:48s}{result[f'{key}_p50_ms']:10.1f}{result[f'{key}_p95_ms']:10.1f}" for label, key in rows]
    return "\n".join(lines)


# ---- sustained rate ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealtimeConfig:
    """One row of the real-time table: node parameters and how many cameras feed it."""

    label: str
    parameters: Mapping[str, Any]
    cameras: int
    overlap: bool
    needs: str = ""  # a module the configuration cannot run without (skipped with the reason when missing)


def realtime_configs(cameras: Sequence[int] = (1, 2)) -> list[RealtimeConfig]:
    """The old default (eager torch), backend auto fp32 and auto int8; each for 1 and 2 cameras, serial and
    overlapped stages."""
    backends = [("torch fp32 (old default)", {"backend": "torch", "precision": "fp32"}, ""),
                ("auto fp32", {"backend": "auto", "precision": "fp32"}, ""),
                ("auto int8", {"backend": "auto", "precision": "int8"}, "nncf")]
    return [RealtimeConfig(label, {**params, "overlap_stages": overlap}, n, overlap, needs)
            for label, params, needs in backends for n in cameras for overlap in (False, True)]


def _publisher(probe: NodeProbe, cameras: Sequence[str], rate_hz: float, image: np.ndarray, sent: dict[Any, float],
               stop: threading.Event) -> None:
    """Publish a frame to every camera each 1/rate_hz s (one message per camera, re-stamped), recording send times."""
    messages = {c: conversions.array_to_image(image, unique_header(), "bgr8") for c in cameras}
    period = 1.0 / rate_hz
    next_time = time.monotonic()
    while not stop.is_set():
        for camera in cameras:
            msg = messages[camera]
            msg.header = unique_header()
            sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.monotonic()
            probe.publish(camera, msg)
        next_time += period
        stop.wait(max(0.0, next_time - time.monotonic()))


def _wait_until_idle(probe: NodeProbe, topics: Sequence[str], quiet_s: float, timeout: float) -> None:
    """Until nothing arrived on ``topics`` for ``quiet_s`` (the frames still in the node are out), at most timeout."""
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        now = sum(len(probe.messages(t)) for t in topics)
        if now == count:
            return
        count = now
        time.sleep(quiet_s)


def run_realtime(config: RealtimeConfig, device: str, width: int, height: int, rate_hz: float, warmup_s: float,
                 measure_s: float, overlay: bool, log_dir: Path, timeout: float,
                 env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Feed ``config.cameras`` cameras at ``rate_hz`` each for warmup + measure seconds; the node's output rate, its
    receive -> publish latency (its /diagnostics, last 100 frames) and the client's round trip in the window.
    ``env``: the ROS environment of both processes (default: :func:`ros_environment`)."""
    if config.needs:
        try:
            __import__(config.needs)
        except ImportError as exc:
            return {"skipped": f"needs the Python package '{config.needs}' ({exc})"}
    env = dict(env) if env is not None else ros_environment()
    env["ROS_LOG_DIR"] = str(log_dir)
    cameras = [f"camera{i}" for i in range(config.cameras)]
    parameters = {**config.parameters, "device": device, "cameras": cameras, "input_qos": "reliable"}
    image = synthetic_frame(height, width)
    sent: dict[Any, float] = {}
    stop = threading.Event()
    try:
        context = running_node(env, log_dir, parameters,
                               {"cameras": cameras, "image_outputs": (), "label_info": False}, timeout=timeout)
        with context as (node, probe):
            for camera in cameras:  # outputs a consumer would take; dropped on arrival so memory stays flat
                for output in IMAGE_OUTPUTS + (("overlay",) if overlay else ()):
                    probe.node.create_subscription(Image, f"{camera}/{output}", lambda msg: None, OUTPUT_QOS)
            feeder = threading.Thread(target=_publisher, args=(probe, cameras, rate_hz, image, sent, stop),
                                      daemon=True)
            started = time.monotonic()
            feeder.start()
            time.sleep(warmup_s + measure_s)
            stop.set()
            feeder.join()
            window = (started + warmup_s, started + warmup_s + measure_s)
            _wait_until_idle(probe, [f"{c}/detections" for c in cameras], quiet_s=2.0, timeout=timeout)
            stats = [probe.diagnostics(f": camera {c}") for c in cameras]
            model = probe.diagnostics(": model") or {}
            received = {c: [(t, m) for t, m in probe.received.get(f"{c}/detections", [])] for c in cameras}
    except RuntimeError as exc:
        return {"error": str(exc).splitlines()[0]}
    round_trip, out_count, sent_count = [], 0, 0
    for (stamp, send_time) in sent.items():
        sent_count += window[0] <= send_time < window[1]
    for camera in cameras:
        for arrival, msg in received[camera]:
            send_time = sent.get((msg.header.stamp.sec, msg.header.stamp.nanosec))
            if send_time is not None and window[0] <= send_time < window[1]:
                out_count += 1
                round_trip.append((arrival - send_time) * 1e3)
    if any(s is None for s in stats):
        return {"error": "no camera diagnostics from the node"}
    return {
        "frames_per_s": out_count / measure_s, "input_per_s": sent_count / measure_s,
        "answered_fraction": out_count / max(sent_count, 1),
        "latency_p50_ms": float(np.median([_float(s, "latency_p50_ms") for s in stats])),
        "latency_p95_ms": float(max(_float(s, "latency_p95_ms") for s in stats)),
        "round_trip_p50_ms": float(np.percentile(round_trip, 50)) if round_trip else float("nan"),
        "round_trip_p95_ms": float(np.percentile(round_trip, 95)) if round_trip else float("nan"),
        "backend": model.get("backend", "?"), "precision": model.get("precision", "?"),
    }


def image_output_costs(width: int, height: int, repeats: int = 20) -> dict[str, Any]:
    """Median ms per frame of each image output the node builds from a pipeline result, in-process: the class mask
    at the original size, the drivable and lane masks, the overlay, and their four ``Image`` messages. The network
    output is the bundled model's for a synthetic frame."""
    from hybridnets_ros.inference.pipeline import HybridNetsPipeline
    from hybridnets_ros.inference.postprocess import FrameResult, segment
    from hybridnets_ros.inference.visualize import draw_overlay

    pipeline = HybridNetsPipeline.from_weights(None, device="cpu", backend="torch", precision="fp32")
    image = synthetic_frame(height, width)
    staged = pipeline.infer(pipeline.prepare([image], "bgr8"))
    detections = pipeline.finish(staged)[0].detections
    header = Header()
    parts: dict[str, Callable[[], Any]] = {}
    mask = segment(staged.raw.segmentation, pipeline.config.seg_mode, staged.letterboxes)[0]
    result = FrameResult(detections, mask, staged.letterboxes[0])
    parts["class mask at original size"] = lambda: segment(staged.raw.segmentation, pipeline.config.seg_mode,
                                                            staged.letterboxes)
    parts["drivable + lane masks"] = lambda: [conversions.class_mask(mask, k) for k in (1, 2)]
    parts["overlay"] = lambda: draw_overlay(image, result, pipeline.class_names, pipeline.seg_names)
    overlay = draw_overlay(image, result, pipeline.class_names, pipeline.seg_names)
    parts["4 Image messages"] = lambda: [conversions.array_to_image(a, header, e) for a, e in
                                         ((mask, "mono8"), (mask, "mono8"), (mask, "mono8"), (overlay, "bgr8"))]
    costs = {}
    for name, part in parts.items():
        part()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            part()
            times.append((time.perf_counter() - started) * 1e3)
        costs[name] = (float(np.median(times)), float(min(times)))
    return {"parts": costs, "masked_percent": float((mask > 0).mean() * 100)}


def format_image_output_costs(costs: Mapping[str, Any], width: int, height: int) -> str:
    """Median and fastest ms per part (the fastest shows the cost itself where other jobs share the cores)."""
    lines = [f"image outputs per {width}x{height} frame, in-process: ms median (fastest)"]
    parts = costs["parts"]
    lines += [f"  {name:32s}{median:8.1f} ({fastest:.1f})" for name, (median, fastest) in parts.items()]
    median, fastest = (sum(v[i] for v in parts.values()) for i in (0, 1))
    lines.append(f"  {'all together':32s}{median:8.1f} ({fastest:.1f})   {costs['masked_percent']:.0f} % of pixels "
                 "masked")
    return "\n".join(lines)


def format_realtime(rows: Sequence[tuple[RealtimeConfig, Mapping[str, Any]]], width: int, height: int,
                    rate_hz: float) -> str:
    lines = [
        f"hybridnets node, sustained: {width}x{height} bgr8 at {rate_hz:g} Hz per camera (reliable), bundled model; "
        "frames/s = outputs per second over all cameras; latency = receive -> publish in the node (p50 / p95); "
        "round trip = client publish -> detections received; answered = outputs / inputs",
        f"{'configuration':26s}{'cams':>5s}{'stages':>12s}{'frames/s':>10s}{'answered':>10s}{'lat p50':>9s}"
        f"{'lat p95':>9s}{'rt p50':>9s}{'rt p95':>9s}  backend",
    ]
    for config, r in rows:
        stages = "overlapped" if config.overlap else "serial"
        head = f"{config.label:26s}{config.cameras:5d}{stages:>12s}"
        if "skipped" in r or "error" in r:
            lines.append(f"{head}  {'skipped' if 'skipped' in r else 'error'}: {r.get('skipped') or r.get('error')}")
            continue
        lines.append(f"{head}{r['frames_per_s']:10.1f}{r['answered_fraction']:10.0%}{r['latency_p50_ms']:9.0f}"
                     f"{r['latency_p95_ms']:9.0f}{r['round_trip_p50_ms']:9.0f}{r['round_trip_p95_ms']:9.0f}  "
                     f"{r['backend']} {r['precision']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybridnets_ros.ros.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--overhead", action="store_true", help="measure the node's overhead per frame (frames one "
                        "at a time) instead of the sustained-rate table")
    parser.add_argument("--weights", type=Path, help="checkpoint for --overhead; default: a random d0 model (the "
                        "node's overhead does not depend on the weights); the sustained table uses the bundled model")
    parser.add_argument("--frames", type=int, default=30, help="frames for --overhead")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overlay", action="store_true", help="also subscribe to the overlay (it is then drawn)")
    parser.add_argument("--rate", type=float, default=30.0, help="input frames/s per camera (sustained table)")
    parser.add_argument("--cameras", default="1,2", help="camera counts for the sustained table")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds fed before the measurement window")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the measurement window")
    parser.add_argument("--only", default="", help="run only configurations whose label contains this text")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the node (an int8 first "
                        "start calibrates) / one frame")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hybridnets_bench_") as tmp:
        if args.overhead:
            weights = args.weights if args.weights is not None else random_checkpoint(Path(tmp))
            try:
                result = run_bench(weights, args.frames, args.width, args.height, args.overlay, Path(tmp),
                                   args.device, args.timeout)
            except RuntimeError as exc:
                print(f"bench failed: {exc}", file=sys.stderr)
                return 1
            print(format_report(result, args.frames, args.width, args.height, args.overlay))
            return 0
        print(format_image_output_costs(image_output_costs(args.width, args.height), args.width, args.height))
        print(flush=True)
        configs = [c for c in realtime_configs(tuple(int(n) for n in args.cameras.split(",")))
                   if args.only in c.label]
        rows = []
        for config in configs:
            result = run_realtime(config, args.device, args.width, args.height, args.rate, args.warmup,
                                  args.seconds, args.overlay, Path(tmp), args.timeout)
            rows.append((config, result))
            print(format_realtime([rows[-1]], args.width, args.height, args.rate).splitlines()[-1], flush=True)
    print()
    print(format_realtime(rows, args.width, args.height, args.rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
