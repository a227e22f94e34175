"""Where a runtime's forward time goes: exporter, opset, static vs dynamic batch and precision, side by side.

Each variant runs the raw network on one thread at batch 1 (one letterboxed synthetic frame) and is timed as the CPU
time of the process (``time.process_time``) around one forward, the variants taking turns round by round: CPU time of
one thread is what the work costs, and stays comparable on a machine that other jobs share (wall-clock time there
mostly measures the other jobs). Printed: median and fastest ms per variant, and the precision OpenVINO actually ran.

Variants: eager torch fp32; OpenVINO on the pipeline's own export (dynamo exporter, opset 18, dynamic batch, reshaped
to a static batch as the backend does) with the f32 hint (what ``precision: fp32`` runs), on a static-batch dynamo
export, on a static TorchScript opset-11 export, and the last with OpenVINO's default settings (bf16 on CPUs with
AVX512-BF16/AMX); OpenVINO int8 as ``precision: int8`` runs it (quantised on synthetic frames; ``--no-int8`` skips
the quantisation); ONNX Runtime on the pipeline's export and on the opset-11 one.

    python -m hybridnets_ros.inference.runtime_bench [--weights W] [--model-config NAME] [--rounds 15]
        [--cache-dir DIR] [--no-int8]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from hybridnets_ros.inference import calibration
from hybridnets_ros.inference.backends import openvino_backend
from hybridnets_ros.inference.backends.onnx_cache import cached_raw_onnx
from hybridnets_ros.inference.backends.optional_import import import_runtime
from hybridnets_ros.inference.bench import add_model_arguments, load_model
from hybridnets_ros.inference.export.exporter import export_onnx

Forward = Callable[[], object]


def openvino_forward(ov, path: Path, input_hw: Sequence[int], x,  # noqa: ANN001 (optional package, numpy input)
                     properties: dict[str, str]) -> tuple[Forward, str]:
    """A one-thread batch-1 forward of an ONNX or IR file, and the inference precision OpenVINO chose for it."""
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.input(0).get_any_name(): [1, 3, *input_hw]})
    compiled = core.compile_model(model, "CPU", {**properties, "INFERENCE_NUM_THREADS": "1"})
    request = compiled.create_infer_request()
    ran_as = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    return (lambda: request.infer({0: x}, share_inputs=True)), ran_as


def onnxruntime_forward(ort, path: Path, x) -> Forward:  # noqa: ANN001
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {session.get_inputs()[0].name: x})


def cpu_ms(forwards: dict[str, Forward], rounds: int) -> dict[str, list[float]]:
    """Per variant, the CPU ms of each of ``rounds`` forwards, taken in turns after two untimed ones each."""
    for forward in forwards.values():
        forward()
        forward()
    samples: dict[str, list[float]] = {name: [] for name in forwards}
    for _ in range(rounds):
        for name, forward in forwards.items():
            start = time.process_time()
            forward()
            samples[name].append((time.process_time() - start) * 1e3)
    return samples


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hybridnets_ros.inference.runtime_bench",
                                     description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--rounds", type=int, default=15, help="timed forwards per variant (median and fastest)")
    parser.add_argument("--cache-dir", help="cache of the pipeline's ONNX file and the int8 model")
    parser.add_argument("--no-int8", action="store_true", help="leave out OpenVINO int8 (its first run quantises)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ov = import_runtime("openvino", "openvino")
    ort = import_runtime("onnxruntime", "onnxruntime")
    torch.set_num_threads(1)
    model, config, source = load_model(args.weights, args.model_config)
    x = calibration.calibration_inputs(calibration.SYNTHETIC, config, 1)[0]
    array = x.numpy()
    hw = config.input_size
    f32 = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    with tempfile.TemporaryDirectory(prefix="runtime_bench_") as tmp:
        pipeline_onnx = cached_raw_onnx(model, config, cache_dir=args.cache_dir)
        static_dynamo = export_onnx(model, config, Path(tmp) / "dynamo_b1.onnx", variant="raw", batch=1)
        opset11 = export_onnx(model, config, Path(tmp) / "torchscript_opset11_b1.onnx", variant="raw", batch=1,
                              opset=11, exporter="torchscript")
        openvino_variants = {
            "OpenVINO, pipeline export (dynamo, opset 18, dynamic batch), f32 hint": (pipeline_onnx, f32),
            "OpenVINO, dynamo static-batch export, f32 hint": (static_dynamo, f32),
            "OpenVINO, TorchScript opset-11 static export, f32 hint": (opset11, f32),
            "OpenVINO, TorchScript opset-11 static export, OpenVINO defaults": (opset11, {}),
            "OpenVINO, pipeline export, OpenVINO defaults": (pipeline_onnx, {}),
        }
        if not args.no_int8:
            int8 = openvino_backend.build_int8_for_model(model, config, cache_dir=args.cache_dir)
            openvino_variants["OpenVINO int8 (precision int8), f32 hint"] = (int8, f32)

        def eager() -> None:
            with torch.inference_mode():
                model(x)

        forwards: dict[str, Forward] = {"torch eager fp32": eager}
        ran_as = {"torch eager fp32": "f32"}
        for name, (path, properties) in openvino_variants.items():
            forwards[name], ran_as[name] = openvino_forward(ov, path, hw, array, properties)
        forwards["ONNX Runtime, pipeline export"] = onnxruntime_forward(ort, pipeline_onnx, array)
        forwards["ONNX Runtime, TorchScript opset-11 static export"] = onnxruntime_forward(ort, opset11, array)
        ran_as.update({name: "f32" for name in forwards if name.startswith("ONNX Runtime")})
        samples = cpu_ms(forwards, args.rounds)
    print(f"model: {source} ('{config.name}', input {hw[0]}x{hw[1]}); batch 1, one thread; CPU ms per forward over "
          f"{args.rounds} rounds (median / fastest); openvino {ov.__version__}, onnxruntime {ort.__version__}, "
          f"torch {torch.__version__}")
    for name, values in samples.items():
        print(f"{statistics.median(values):8.1f} {min(values):8.1f}  {name} [runs {ran_as[name]}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
