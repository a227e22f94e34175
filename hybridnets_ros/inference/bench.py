"""Inference benchmark (``make bench``): every installed backend, side by side, in one process, on the same frames.

For each backend and batch size it runs the whole pipeline (preprocess + forward + postprocess, the frames at their
original size) and prints the median ms per frame of each stage and in total, frames/s, and the ratio of the total
and of the forward to eager torch fp32 at the same batch size. Frames: the images of ``--images DIR``, else synthetic
1280x720 road-like frames; a good real set is the BDD100K demo images beside the repository,
``--images ../shared/data/bdd_demo`` (what ``make bench`` passes when that folder exists).

Backend names: ``auto`` and ``auto-int8`` (what the node runs by default, and with precision int8; the backend
chosen is in the notes), ``torch``, ``torch-channels-last``, ``torch-compile`` (inductor; its compile time is
reported separately), ``onnxruntime``, ``openvino``, ``openvino-int8`` (NNCF-quantised on synthetic frames; the
first run quantises, later runs read the cache), ``openvino-bf16`` (OpenVINO CPU with the bf16 inference precision,
for CPUs with AMX/AVX512-BF16; not in the default set: on golden variant C it is far outside the fp32 tolerances),
and on CUDA ``torch-fp16``, ``tensorrt`` / ``tensorrt-fp16`` / ``tensorrt-int8``. A backend that is not installed
or fails is reported and skipped.

    python -m hybridnets_ros.inference.bench [--weights W] [--model-config NAME] [--images DIR] [--frames N]
        [--repeats R] [--backends torch,onnxruntime,...] [--batch-sizes 1,4,8] [--device auto] [--json out.json]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridnets_ros import resources
from hybridnets_ros.cli_support import configure_logging
from hybridnets_ros.conventions import IMAGE_SUFFIXES
from hybridnets_ros.inference.backends import create_backend, resolve_device
from hybridnets_ros.inference.pipeline import HybridNetsPipeline
from hybridnets_ros.inference.sample_frames import image_files, read_rgb, synthetic_frames
from hybridnets_ros.model import HybridNets, ModelConfig, build_model, load_model_config

LOG = logging.getLogger(__name__)

DEFAULT_CPU_BACKENDS = ("torch", "auto", "auto-int8", "onnxruntime", "openvino")
DEFAULT_CUDA_BACKENDS = ("torch", "auto", "torch-fp16", "onnxruntime", "tensorrt", "tensorrt-fp16")
SYNTHETIC_HW = (720, 1280)
STAGES = ("preprocess", "forward", "postprocess")
REFERENCE = "torch"


@dataclass(frozen=True)
class BackendSpec:
    """How a bench name maps to ``create_backend`` arguments."""

    backend: str
    precision: str = "fp32"
    options: tuple[tuple[str, Any], ...] = ()
    compile: bool = False


def backend_specs(max_batch: int) -> dict[str, BackendSpec]:
    return {
        "auto": BackendSpec("auto", "auto"),
        "auto-int8": BackendSpec("auto", "int8"),
        "torch": BackendSpec("torch"),
        "torch-channels-last": BackendSpec("torch", options=(("channels_last", True),)),
        "torch-compile": BackendSpec("torch", compile=True),
        "torch-fp16": BackendSpec("torch", "fp16"),
        "onnxruntime": BackendSpec("onnxruntime"),
        "openvino": BackendSpec("openvino"),
        "openvino-int8": BackendSpec("openvino", "int8"),
        "openvino-bf16": BackendSpec("openvino", options=(("inference_precision", "bf16"),)),
        "tensorrt": BackendSpec("tensorrt", options=(("max_batch", max_batch),)),
        "tensorrt-fp16": BackendSpec("tensorrt", "fp16", options=(("max_batch", max_batch),)),
        "tensorrt-int8": BackendSpec("tensorrt", "int8", options=(("max_batch", max_batch),)),
    }


@dataclass
class Measurement:
    """Median ms per frame by stage for one backend and batch size."""

    backend: str
    batch: int
    preprocess: float
    forward: float
    postprocess: float
    total: float

    @property
    def fps(self) -> float:
        return 1000.0 / self.total


def _versions() -> dict[str, str]:
    versions = {"torch": torch.__version__}
    for package in ("onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "tensorrt-cu12", "tensorrt-cu13"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_frames(count: int, images: Path | None) -> tuple[list[np.ndarray], str]:
    """``count`` RGB frames, cycling through the images in the folder ``images`` (None: synthetic frames), and a
    description of where they came from. FileNotFoundError when the folder is missing or holds no images."""
    if images is None:
        height, width = SYNTHETIC_HW
        return synthetic_frames(count, SYNTHETIC_HW), f"{count} synthetic {width}x{height} road-like frames"
    files = image_files(images) if images.is_dir() else []
    if not files:
        raise FileNotFoundError(f"--images '{images}': no folder with images ({', '.join(IMAGE_SUFFIXES)}) there; "
                                "give a folder of camera frames, or leave --images out for synthetic frames")
    frames = [read_rgb(files[i % len(files)]) for i in range(count)]
    sizes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})
    return frames, f"{count} frames from {len(files)} images in {images} ({', '.join(sizes)})"


def load_model(weights: str | None, model_config: str | None) -> tuple[HybridNets, ModelConfig, str]:
    """The model to measure and how it was obtained: the given weights, else the bundled model, else a randomly
    initialised network of the default d3 BDD100K config (same cost as the pretrained one)."""
    config = load_model_config(model_config) if model_config else None
    path = Path(weights).expanduser() if weights else resources.bundled_weights()
    if weights or path.is_file():
        model, config = build_model(path, config, device="cpu")
        return model, config, str(path)
    config = config or load_model_config(resources.DEFAULT_MODEL_CONFIG)
    torch.manual_seed(0)
    return HybridNets(config).eval(), config, f"randomly initialised '{config.name}' (no bundled weights at {path})"


def _batches(frames: Sequence[np.ndarray], batch: int, count: int) -> list[list[np.ndarray]]:
    return [[frames[(i * batch + j) % len(frames)] for j in range(batch)] for i in range(count)]


def _run(pipeline: HybridNetsPipeline, chunk: list[np.ndarray]) -> dict[str, float]:
    """One call: per-frame ms of each stage (the pipeline's own timings) and of the whole call."""
    start = time.perf_counter()
    pipeline(chunk)
    sample = {stage: pipeline.last_timings[stage] / len(chunk) for stage in STAGES}
    sample["total"] = (time.perf_counter() - start) * 1e3 / len(chunk)
    return sample


def measure_round_robin(pipelines: dict[str, HybridNetsPipeline], frames: Sequence[np.ndarray], batch: int,
                        repeats: int, warmup: int, failed: dict[str, str]) -> list[Measurement]:
    """Medians over ``repeats`` calls per backend, the backends taking turns call by call on the same batch, so that
    load from other processes on a shared machine spreads over all of them alike. A backend failing here (e.g. a
    torch.compile error on its first call) is recorded in ``failed`` and dropped."""
    chunks = _batches(frames, batch, warmup + repeats)
    samples: dict[str, list[dict[str, float]]] = {}
    for name, pipeline in pipelines.items():
        if name in failed:
            continue
        try:
            for chunk in chunks[:warmup]:
                _run(pipeline, chunk)
            samples[name] = []
        except Exception as exc:  # noqa: BLE001 - reported, and the other backends go on
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    for chunk in chunks[warmup:]:
        for name in samples:
            samples[name].append(_run(pipelines[name], chunk))
    results = []
    for name, runs in samples.items():
        medians = {key: statistics.median(run[key] for run in runs) for key in (*STAGES, "total")}
        results.append(Measurement(name, batch, **medians))
        print(f"  {name} batch {batch}: {results[-1].total:.1f} ms/frame", flush=True)
    return results


def build_pipeline(spec: BackendSpec, model: HybridNets, config: ModelConfig, device: torch.device,
                   cache_dir: str | None) -> tuple[HybridNetsPipeline, str]:
    """A pipeline for ``spec`` and a note (e.g. compile time) for the report."""
    options = dict(spec.options)
    if spec.backend != "torch" and cache_dir:
        options["cache_dir"] = cache_dir
    device_arg = "cpu" if spec.backend == "openvino" else device
    if spec.backend in ("torch", "auto"):
        # The torch backend (also auto's last resort) converts the module in place (fp16, channels-last, compile):
        # each one gets its own copy, so the shared model (and the ONNX cache key, a digest of its weights) stays
        # fp32 for the others.
        model = copy.deepcopy(model)
    start = time.perf_counter()
    backend = create_backend(spec.backend, model, config, device_arg, spec.precision, **options)
    note = f"set-up {time.perf_counter() - start:.1f} s"
    if spec.backend == "auto":
        note += f"; {backend.name} {backend.precision}: {backend.selection}"
    if spec.compile:
        backend.model = torch.compile(backend.model)
        note += " (+ compile on the first call, in the warm-up)"
    return HybridNetsPipeline(backend, config), note


def format_table(results: list[Measurement], batch_sizes: Sequence[int]) -> str:
    reference = {m.batch: m for m in results if m.backend == REFERENCE}
    header = (f"{'backend':<22}{'batch':>6}{'pre ms':>9}{'fwd ms':>9}{'post ms':>9}{'total ms':>10}{'fps':>8}"
              f"{'x total':>9}{'x fwd':>8}")
    lines = [header, "-" * len(header)]
    for batch in batch_sizes:
        for m in (r for r in results if r.batch == batch):
            ref = reference.get(batch)
            speedup = f"{ref.total / m.total:>9.2f}{ref.forward / m.forward:>8.2f}" if ref else f"{'-':>9}{'-':>8}"
            lines.append(f"{m.backend:<22}{m.batch:>6}{m.preprocess:>9.1f}{m.forward:>9.1f}{m.postprocess:>9.1f}"
                         f"{m.total:>10.1f}{m.fps:>8.2f}{speedup}")
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got '{text}'")
    return values


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--weights`` and ``--model-config``, as :func:`load_model` takes them."""
    parser.add_argument("--weights", help="checkpoint (default: the bundled model, else a random d3 BDD100K network)")
    parser.add_argument("--model-config", help="model config name or yaml path")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hybridnets_ros.inference.bench",
                                     description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--images", type=Path, help="folder of images (default: synthetic 1280x720 road-like frames; "
                        "../shared/data/bdd_demo is a good real set)")
    parser.add_argument("--frames", type=int, default=6, help="distinct frames cycled through (default 6)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per backend and batch size (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (compiles, caches)")
    parser.add_argument("--backends", help="comma-separated bench backends (default: the CPU or CUDA set)")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 4, 8])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--cache-dir", help="ONNX/engine cache (default ~/.cache/hybridnets_ros)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(logging.WARNING)
    device = resolve_device(args.device)
    specs = backend_specs(max(args.batch_sizes))
    default = DEFAULT_CUDA_BACKENDS if device.type == "cuda" else DEFAULT_CPU_BACKENDS
    names = [n.strip() for n in args.backends.split(",")] if args.backends else list(default)
    unknown = sorted(set(names) - set(specs))
    if unknown:
        print(f"unknown bench backends {unknown}; known: {sorted(specs)}", file=sys.stderr)
        return 2
    try:
        frames, frames_source = load_frames(args.frames, args.images)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    model, config, source = load_model(args.weights, args.model_config)
    print(f"model: {source} ('{config.name}', input {config.input_size[0]}x{config.input_size[1]})")
    print(f"frames: {frames_source}; {args.warmup} warm-up + {args.repeats} timed calls per backend and batch size")
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else _cpu_name()}), "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()))
    print("precision fp32 unless the name says otherwise; ms are medians per frame; "
          "x = speed-up over eager torch fp32\n", flush=True)
    pipelines: dict[str, HybridNetsPipeline] = {}
    notes: dict[str, str] = {}
    failed: dict[str, str] = {}
    for name in names:
        try:
            pipelines[name], notes[name] = build_pipeline(specs[name], model, config, device, args.cache_dir)
        except Exception as exc:  # noqa: BLE001 - a missing or failing backend must not end the comparison
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            print(f"  {name}: skipped ({failed[name]})", flush=True)
    results: list[Measurement] = []
    for batch in args.batch_sizes:
        start = time.perf_counter()
        results += measure_round_robin(pipelines, frames, batch, args.repeats, args.warmup, failed)
        print(f"  (batch {batch} took {time.perf_counter() - start:.0f} s)", flush=True)
    notes.update({name: f"skipped ({reason})" for name, reason in failed.items()})
    print()
    print(format_table(results, args.batch_sizes))
    print()
    print("\n".join(f"{name}: {note}" for name, note in notes.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": source, "config": config.name, "frames": frames_source, "device": str(device),
            "torch_threads": torch.get_num_threads(), "versions": _versions(), "notes": notes,
            "results": [dataclasses.asdict(m) for m in results],
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
