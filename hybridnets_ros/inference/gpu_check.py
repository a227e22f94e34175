"""One-command GPU check: ``python -m hybridnets_ros.inference.gpu_check --out DIR --golden DIR``.

Runs from a source tree on a bare CUDA machine (Python, torch, numpy, opencv; no ROS, no install, no PyYAML) in
under 5 minutes, and writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md``:

1. ``golden_fp32``: the golden variant C d3 network (built from the golden folder) on the device in fp32 (TF32
   off) against the CPU golden results with the golden README's tolerances: raw heads, and the whole pipeline on
   the demo images with the robust ``few_`` rule (run just below ``few_conf_thresh``, compare only boxes clearly
   above it, match boxes by IoU, not by list position).
2. ``golden_fp16``: fp16 on CUDA. Variant C amplifies rounding about 3e4-fold (batch 1 vs batch 6 in fp32 already
   moves its seg logits by 3.6e-3), so fp16 (5e-4 relative rounding) cannot match it: measured with CPU fp16 its seg
   logits move by 15 and only 79 % of argmax pixels agree. Its deviations are recorded for information only; the
   pass/fail check runs the bundled trained model in fp16 on the device against the same model in fp32 on the CPU,
   with tolerances about 6x what CPU fp16 showed on that model (``FP16_TOLERANCES``).
3. ``bench``: the whole pipeline (upload, letterbox, normalise, forward, post-processing, masks at the original
   size, results on the host) on 1280x720 bgr8 frames, d3 at 384x640, batches 1, 4, 8, 16, 32: latency p50/p99
   (CUDA events) and frames/s; eager fp32 and fp16, CUDA graphs fp16, ``torch.compile`` fp16.

Every section and every measurement records its own error, so one failure does not lose the rest; the exit code is
1 when a check failed or errored. ``--device cpu`` runs the same code in a reduced form (the CI self-test): the CUDA
parts are recorded as skipped with the reason.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.inference.backends import create_backend, resolve_device
from hybridnets_ros.inference.box_pairing import pair_boxes
from hybridnets_ros.inference.pipeline import HybridNetsPipeline
from hybridnets_ros.model.checkpoint import build_model
from hybridnets_ros.model.config import ModelConfig
from hybridnets_ros.model.hybridnets import HybridNets, HybridNetsOutput
from hybridnets_ros.resources import bundled_weights

# The golden network as the golden README states it (compound_coef 3, one class, road + lane, upstream anchors,
# ImageNet normalisation: ModelConfig's defaults), so no config file has to be read.
GOLDEN_CONFIG = ModelConfig(name="golden_d3_variant_c", compound_coef=3, input_size=(384, 640), obj_list=("car",),
                            seg_list=("road", "lane"))
DEMO_IMAGES = (1, 2, 3)
FRAME_HW = (720, 1280)


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """Limits of one comparison; boxes are compared when they score above ``threshold + margin`` on either side,
    paired by IoU >= ``min_iou`` and the same class, and their scores may differ by ``score_atol``."""

    regression: float
    classification: float
    seg_logits: float
    seg_agreement: float
    score_atol: float
    min_iou: float
    margin: float


# The golden README's suggested checks for variant C (fp32, another device or kernel library).
FP32_TOLERANCES = Tolerances(regression=2e-3, classification=5e-4, seg_logits=2e-2, seg_agreement=0.999,
                             score_atol=5e-4, min_iou=0.99, margin=1e-3)
# Bundled d0 model, fp16 vs fp32: CPU fp16 measured regression 1.6e-3, classification 1.7e-3, seg logits 0.072,
# argmax agreement 99.957 % (demo images 1-3).
FP16_TOLERANCES = Tolerances(regression=1e-2, classification=1e-2, seg_logits=0.5, seg_agreement=0.995,
                             score_atol=1e-2, min_iou=0.9, margin=2e-2)
FP16_SCORE_THRESHOLD = 0.25


class Skip(Exception):
    """A part that cannot run here; its message is the reason."""


# ---- comparisons ----------------------------------------------------------------------------------------------


def compare_raw(got: HybridNetsOutput, ref: HybridNetsOutput, tol: Tolerances) -> dict[str, Any]:
    """Max |difference| per head and seg argmax agreement, with ``passed``."""
    got = HybridNetsOutput(*(t.detach().float().cpu() for t in got))
    ref = HybridNetsOutput(*(t.detach().float().cpu() for t in ref))
    report = {
        "regression_max_abs": float((got.regression - ref.regression).abs().max()),
        "classification_max_abs": float((got.classification - ref.classification).abs().max()),
        "seg_logits_max_abs": float((got.segmentation - ref.segmentation).abs().max()),
        "seg_argmax_agreement": float((got.segmentation.argmax(1) == ref.segmentation.argmax(1)).float().mean()),
    }
    report["passed"] = (report["regression_max_abs"] <= tol.regression
                        and report["classification_max_abs"] <= tol.classification
                        and report["seg_logits_max_abs"] <= tol.seg_logits
                        and report["seg_argmax_agreement"] >= tol.seg_agreement)
    return report


def compare_detections(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, ref_boxes: np.ndarray,
                       ref_scores: np.ndarray, ref_class_ids: np.ndarray, threshold: float,
                       tol: Tolerances) -> dict[str, Any]:
    """The robust rule of the golden README, both ways (:func:`pair_boxes`): every box above ``threshold + margin``
    on either side has its own partner of the same class on the other (by IoU, not by list position), and paired
    scores differ by at most ``score_atol``."""
    pairing = pair_boxes(ref_boxes, ref_scores, ref_class_ids, boxes, scores, class_ids, threshold + tol.margin,
                         tol.min_iou)
    return {
        "boxes_compared": len(pairing.pairs),
        "reference_boxes_without_partner": len(pairing.unpaired_reference),
        "boxes_without_reference_partner": len(pairing.unpaired),
        "worst_best_iou": pairing.worst_iou, "worst_score_gap": pairing.worst_score_gap,
        "passed": pairing.passed(tol.score_atol),
    }


def compare_masks(mask: np.ndarray, ref: np.ndarray, tol: Tolerances) -> dict[str, Any]:
    agreement = float((mask == ref).mean()) if mask.shape == ref.shape else 0.0
    return {"shape": list(mask.shape), "agreement": agreement, "passed": agreement >= tol.seg_agreement}


# ---- models and inputs ----------------------------------------------------------------------------------------


def golden_model(golden: Path) -> HybridNets:
    """Variant C: the seed-0 state dict updated with the variant C overrides (golden README), on the CPU."""
    state = torch.load(golden / "hybridnets_d3_seed0_state_dict.pt", weights_only=True)
    state.update(torch.load(golden / "hybridnets_d3_seed0_variantC_overrides.pt", weights_only=True))
    model = HybridNets(GOLDEN_CONFIG)
    model.load_state_dict(state, strict=True)
    return model.eval()


def demo_images(folder: Path) -> dict[int, np.ndarray]:
    """The golden demo images 1..3 as bgr8 (720,1280,3), read as the reference did."""
    images = {}
    for index in DEMO_IMAGES:
        path = folder / f"{index}.jpg"
        image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            raise Skip(f"demo image {path} is missing or unreadable: pass --images DIR holding 1.jpg..3.jpg "
                       "(the golden README's ../data/bdd_demo)")
        images[index] = image
    return images


def bench_frames(images: dict[int, np.ndarray] | None, count: int) -> list[np.ndarray]:
    """``count`` distinct 1280x720 bgr8 frames: the demo images (shifted copies) or, without them, noise scenes."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(count):
        if images:
            base = images[DEMO_IMAGES[i % len(images)]]
            frames.append(np.ascontiguousarray(np.roll(base, 7 * i, axis=1)))
        else:
            frames.append(rng.integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8))
    return frames


def disable_tf32() -> None:
    """fp32 means fp32: cuDNN would otherwise run convolutions in TF32 (10-bit mantissa) on Ampere and newer.

    The ``fp32_precision`` API where torch has it (mixing it with the legacy ``allow_tf32`` flags is an error there).
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def make_pipeline(model: torch.nn.Module, config: ModelConfig, device: torch.device, precision: str,
                  postprocess: DetectionThresholds | None = None) -> HybridNetsPipeline:
    backend = create_backend("torch", model, config, device, precision)
    return HybridNetsPipeline(backend, config, postprocess)


# ---- accelerated forwards -------------------------------------------------------------------------------------


class CudaGraphBackend:
    """A torch backend whose forward replays one CUDA graph per input shape (captured on first use)."""

    name = "torch+cuda_graphs"

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.device = backend.device
        self.precision = backend.precision
        self._graphs: dict[tuple[int, ...], tuple[torch.Tensor, HybridNetsOutput, torch.cuda.CUDAGraph]] = {}

    def _capture(self, x: torch.Tensor) -> tuple[torch.Tensor, HybridNetsOutput, torch.cuda.CUDAGraph]:
        static_in = x.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):  # cuDNN picks its algorithms before capture
                self.backend.forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.backend.forward(static_in)
        return static_in, static_out, graph

    def forward(self, x: torch.Tensor) -> HybridNetsOutput:
        key = tuple(x.shape)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        static_in, static_out, graph = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return HybridNetsOutput(*(t.clone() for t in static_out))  # the next replay overwrites static_out


def compiled_backend(backend: Any) -> Any:
    """The torch backend with its module compiled by ``torch.compile`` (static shapes: one graph per batch size)."""
    backend.model = torch.compile(backend.model, dynamic=False)
    return backend


# ---- sections -------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Options:
    out: Path
    golden: Path
    images: Path
    device: torch.device
    batches: tuple[int, ...]
    repeats: int
    warmup: int
    budget_s: float
    started: float = dataclasses.field(default_factory=time.monotonic)

    def time_left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)


def run_section(report: dict[str, Any], name: str, body: Callable[[], dict[str, Any]]) -> None:
    """``report['sections'][name]``: the body's dict with a status (passed/failed/skipped/error)."""
    started = time.monotonic()
    try:
        result = body()
        result.setdefault("status", "passed" if result.get("passed", True) else "failed")
    except Skip as exc:
        result = {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - recorded; the other sections still run
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    result["seconds"] = round(time.monotonic() - started, 2)
    report["sections"][name] = result
    print(f"[gpu_check] {name}: {result['status']} ({result['seconds']} s)"
          + (f" - {result.get('reason') or result.get('error')}" if result["status"] in ("skipped", "error") else ""),
          flush=True)


def environment(opts: Options) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "opencv": cv2.__version__, "device": str(opts.device), "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
    }
    if opts.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(opts.device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def check_golden_fp32(opts: Options) -> dict[str, Any]:
    disable_tf32()
    tol = FP32_TOLERANCES
    pipeline = make_pipeline(golden_model(opts.golden), GOLDEN_CONFIG, opts.device, "fp32")
    x = torch.load(opts.golden / "input_demo1.pt", weights_only=True)["x"]
    raw = torch.load(opts.golden / "raw_seed0_variantC_demo1.pt", weights_only=True)
    with torch.inference_mode():
        out = pipeline.forward(x.to(opts.device))
    result: dict[str, Any] = {"tolerances": dataclasses.asdict(tol), "raw_demo1": compare_raw(
        out, HybridNetsOutput(raw["regression"], raw["classification"], raw["segmentation"]), tol)}
    try:
        images = demo_images(opts.images)
    except Skip as exc:  # the raw check above still counts
        images = {}
        result["pipeline"] = {"status": "skipped", "reason": str(exc)}
    for index, image in images.items():
        post = np.load(opts.golden / f"post_seed0_variantC_img{index}.npz")
        few = float(post["few_conf_thresh"])
        pipeline.postprocess.score_threshold = few - tol.margin
        pipeline.postprocess.nms_iou_threshold = float(post["iou_thresh"])
        frame = pipeline([image], "bgr8")[0]
        result[f"pipeline_img{index}"] = {
            "detections": compare_detections(frame.detections.boxes, frame.detections.scores,
                                             frame.detections.class_ids, post["few_rois_orig"], post["few_scores"],
                                             post["few_class_ids"], few, tol),
            "seg_mask": compare_masks(frame.seg_mask, post["few_seg_mask_orig"], tol),
        }
    result["passed"] = _all_passed(result)
    return result


def check_fp16(opts: Options) -> dict[str, Any]:
    if opts.device.type != "cuda":
        raise Skip(f"fp16 runs on CUDA only; the device is {opts.device}")
    tol = FP16_TOLERANCES
    result: dict[str, Any] = {"tolerances": dataclasses.asdict(tol)}
    x = torch.load(opts.golden / "input_demo1.pt", weights_only=True)["x"]
    raw = torch.load(opts.golden / "raw_seed0_variantC_demo1.pt", weights_only=True)
    golden = make_pipeline(golden_model(opts.golden), GOLDEN_CONFIG, opts.device, "fp16")
    with torch.inference_mode():
        out = golden.forward(x.to(opts.device))
    info = compare_raw(out, HybridNetsOutput(raw["regression"], raw["classification"], raw["segmentation"]), tol)
    info.pop("passed")
    result["variant_c_raw_demo1_informational"] = info
    del golden
    model, config = build_model(bundled_weights(), device="cpu")
    reference = make_pipeline(copy.deepcopy(model), config, torch.device("cpu"), "fp32",
                              DetectionThresholds(score_threshold=FP16_SCORE_THRESHOLD - tol.margin))
    half = make_pipeline(model, config, opts.device, "fp16",
                         DetectionThresholds(score_threshold=FP16_SCORE_THRESHOLD - tol.margin))
    images = demo_images(opts.images)
    for index, image in images.items():
        x_cpu, _ = reference.preprocess([image], "bgr8")
        with torch.inference_mode():
            ref_raw = reference.forward(x_cpu)
            got_raw = half.forward(x_cpu.to(opts.device))
        ref = reference([image], "bgr8")[0]
        got = half([image], "bgr8")[0]
        result[f"bundled_img{index}"] = {
            "raw": compare_raw(got_raw, ref_raw, tol),
            "detections": compare_detections(got.detections.boxes, got.detections.scores, got.detections.class_ids,
                                             ref.detections.boxes, ref.detections.scores, ref.detections.class_ids,
                                             FP16_SCORE_THRESHOLD, tol),
            "seg_mask": compare_masks(got.seg_mask, ref.seg_mask, tol),
        }
    result["passed"] = _all_passed(result)
    return result


def _all_passed(node: Any) -> bool:
    if isinstance(node, dict):
        return all(_all_passed(v) for k, v in node.items() if k != "tolerances") and node.get("passed", True)
    return True


def measure(pipeline: HybridNetsPipeline, frames: list[np.ndarray], repeats: int, warmup: int) -> dict[str, Any]:
    """Latency of whole pipeline calls on ``frames`` (CUDA events on CUDA, wall clock elsewhere), in ms."""
    cuda = pipeline.device.type == "cuda"
    for _ in range(warmup):
        pipeline(frames, "bgr8")
    latencies, stages = [], []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            pipeline(frames, "bgr8")
            end.record()
            end.synchronize()
            latencies.append(start.elapsed_time(end))
        else:
            started = time.perf_counter()
            pipeline(frames, "bgr8")
            latencies.append((time.perf_counter() - started) * 1e3)
        stages.append(dict(pipeline.last_timings))
    lat = np.asarray(latencies)
    return {
        "batch": len(frames), "repeats": repeats, "timer": "cuda_events" if cuda else "perf_counter",
        "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p99_ms": float(np.percentile(lat, 99)),
        "latency_mean_ms": float(lat.mean()), "frames_per_s": float(len(frames) * 1e3 / lat.mean()),
        "stage_p50_ms": {k: float(np.median([s[k] for s in stages])) for k in stages[0]},
    }


BENCH_MODES = (("eager", "fp32"), ("eager", "fp16"), ("cuda_graphs", "fp16"), ("compile", "fp16"))
# Budget a measurement needs before it starts: torch.compile builds a graph per batch size (a minute or more).
MIN_SECONDS_LEFT = {"eager": 0.0, "cuda_graphs": 5.0, "compile": 60.0}


def bench_pipeline(opts: Options, mode: str, precision: str) -> HybridNetsPipeline:
    if opts.device.type != "cuda" and (precision == "fp16" or mode != "eager"):
        raise Skip(f"{mode} {precision} is measured on CUDA only; the device is {opts.device}")
    if precision == "fp32":
        disable_tf32()
    pipeline = make_pipeline(golden_model(opts.golden), GOLDEN_CONFIG, opts.device, precision)
    if mode == "cuda_graphs":
        pipeline.backend = CudaGraphBackend(pipeline.backend)
    elif mode == "compile":
        pipeline.backend = compiled_backend(pipeline.backend)
    return pipeline


def bench(opts: Options) -> dict[str, Any]:
    """Every (mode, precision) x batch; each entry records its own skip or error. Thresholds: the demo defaults
    (0.25 / 0.3), so post-processing sees the full pre_nms_top_k candidates of the random-weight network."""
    try:
        images = demo_images(opts.images)
    except Skip:
        images = None
    frames = bench_frames(images, max(opts.batches))
    result: dict[str, Any] = {"frames": "demo images" if images else "random noise", "frame_hw": list(FRAME_HW),
                              "network_hw": list(GOLDEN_CONFIG.input_size), "runs": []}
    for mode, precision in BENCH_MODES:
        try:
            pipeline = bench_pipeline(opts, mode, precision)
            error = None
        except Skip as exc:
            result["runs"].append({"mode": mode, "precision": precision, "status": "skipped", "reason": str(exc)})
            continue
        except Exception as exc:  # noqa: BLE001
            pipeline, error = None, f"{type(exc).__name__}: {exc}"
        # Batch 32 and 1 first: the goals are stated for them, and a slow compile may use up the time budget.
        for batch in sorted(opts.batches, key=lambda b: (b not in (32, 1), -b)):
            entry: dict[str, Any] = {"mode": mode, "precision": precision, "batch": batch}
            if error is not None:
                entry.update(status="error", error=error)
            elif opts.time_left() <= MIN_SECONDS_LEFT[mode]:
                entry.update(status="skipped", reason=f"time budget of {opts.budget_s:.0f} s used up (a {mode} "
                             f"measurement starts only with {MIN_SECONDS_LEFT[mode]:.0f} s left)")
            else:
                try:
                    entry.update(measure(pipeline, frames[:batch], opts.repeats, opts.warmup), status="measured")
                except Exception as exc:  # noqa: BLE001
                    entry.update(status="error", error=f"{type(exc).__name__}: {exc}")
            result["runs"].append(entry)
            print(f"[gpu_check] bench {mode} {precision} batch {batch}: {entry['status']}"
                  + (f" p50 {entry['latency_p50_ms']:.2f} ms, {entry['frames_per_s']:.1f} frames/s"
                     if entry["status"] == "measured" else ""), flush=True)
        del pipeline
        if opts.device.type == "cuda":
            torch.cuda.empty_cache()
    result["passed"] = not any(r["status"] == "error" for r in result["runs"])
    return result


# ---- report ---------------------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    env = report["sections"].get("environment", {})
    lines = [f"# gpu_check: {env.get('gpu', env.get('device', '?'))}, torch {env.get('torch', '?')}", ""]
    lines += ["| section | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {s['status']} | {s['seconds']} |" for name, s in report["sections"].items()]
    runs = report["sections"].get("bench", {}).get("runs", [])
    if runs:
        lines += ["", "Whole pipeline, 1280x720 bgr8 frames -> results on the host, d3 at 384x640:", "",
                  "| mode | precision | batch | p50 ms | p99 ms | frames/s | note |", "|---|---|---|---|---|---|---|"]
        for r in runs:
            if r["status"] == "measured":
                lines.append(f"| {r['mode']} | {r['precision']} | {r['batch']} | {r['latency_p50_ms']:.2f} | "
                             f"{r['latency_p99_ms']:.2f} | {r['frames_per_s']:.1f} | |")
            else:
                note = r.get("reason") or r.get("error", "")
                lines.append(f"| {r['mode']} | {r['precision']} | {r.get('batch', '-')} | | | | {r['status']}: "
                             f"{note} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m hybridnets_ros.inference.gpu_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--golden", type=Path, required=True, help="the golden folder (shared/golden)")
    parser.add_argument("--images", type=Path, help="demo images 1.jpg..3.jpg; default: GOLDEN/../data/bdd_demo")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for the reduced self-test")
    parser.add_argument("--batches", default="1,4,8,16,32", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per batch size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per batch size first")
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="measurements still pending after this many seconds are skipped (say so in the JSON)")
    args = parser.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(",") if b.strip())
    if not batches or min(batches) < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--batches needs positive sizes, --repeats >= 1 and --warmup >= 0")
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as exc:
        parser.error(f"--device {args.device}: {exc}")
    images = args.images if args.images is not None else args.golden.parent / "data" / "bdd_demo"
    return Options(args.out, args.golden, images, device, batches, args.repeats, args.warmup, args.budget_s)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if not opts.golden.is_dir():
        print(f"gpu_check: golden folder {opts.golden} does not exist: pass --golden DIR (shared/golden)",
              file=sys.stderr)
        return 2
    opts.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"command": " ".join(sys.argv), "sections": {}}
    run_section(report, "environment", lambda: environment(opts))
    run_section(report, "golden_fp32", lambda: check_golden_fp32(opts))
    run_section(report, "golden_fp16", lambda: check_fp16(opts))
    run_section(report, "bench", lambda: bench(opts))
    report["passed"] = all(s["status"] in ("passed", "skipped") for s in report["sections"].values())
    (opts.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (opts.out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
