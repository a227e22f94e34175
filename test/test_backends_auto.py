"""``backend: auto``: what it picks on this CPU and why, its fall-backs (a runtime missing, a backend failing to
start), explicit backends and precisions winning, and the reason reaching /diagnostics."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from export_support import assert_same_detections, mask_agreement, robust_postprocess, small_d0_model, torch_pipeline
from hybridnets_ros.inference.backends import auto, create_backend
from hybridnets_ros.inference.backends.base import resolve_precision
from hybridnets_ros.inference.pipeline import HybridNetsPipeline
from hybridnets_ros.inference.sample_frames import synthetic_frames
from hybridnets_ros.ros import diagnostics

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def d0():
    return small_d0_model()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auto_cache")


def test_auto_precision_is_fp16_on_cuda_and_fp32_elsewhere_and_explicit_values_stay():
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("auto", torch.device("cuda", 0)) == "fp16"
    for precision in ("fp32", "fp16", "int8"):
        assert resolve_precision(precision, CPU) == precision
    with pytest.raises(ValueError, match=r"unknown precision 'bf16'.*'auto', 'fp32', 'fp16', 'int8'"):
        resolve_precision("bf16", CPU)


def test_candidates_fastest_first_by_device_and_precision():
    assert [c.name for c in auto.candidates(CPU, "fp32")] == ["openvino", "onnxruntime", "torch"]
    assert [c.name for c in auto.candidates(CPU, "int8")] == ["openvino"]
    assert [c.name for c in auto.candidates(torch.device("cuda", 0), "fp16")] == ["tensorrt", "torch"]
    assert [c.name for c in auto.candidates(torch.device("cuda", 0), "int8")] == ["tensorrt"]


@pytest.mark.slow
def test_auto_on_this_cpu_runs_openvino_with_the_torch_results(d0, cache_dir, caplog):
    pytest.importorskip("openvino")
    model, config = d0
    frames = synthetic_frames(2, (720, 1280), seed=3)  # scores with clear gaps for this small model
    postprocess = robust_postprocess(model, config, frames)
    reference = torch_pipeline(model, config, postprocess)
    with caplog.at_level("INFO", logger="hybridnets_ros.inference.backends"):
        backend = create_backend("auto", model, config, "cpu", "auto", cache_dir=cache_dir)
    assert (backend.name, backend.precision) == ("openvino", "fp32")
    assert backend.selection == "auto on cpu fp32: openvino (fastest installed)"
    assert caplog.text.count(backend.selection) == 1, "the choice is logged once"
    for want, got in zip(reference(frames), HybridNetsPipeline(backend, config, postprocess)(frames)):
        assert_same_detections(want.detections, got.detections, "auto", strict_order=False)
        assert mask_agreement(want.seg_mask, got.seg_mask) >= 0.999


def test_auto_falls_back_to_the_next_importable_runtime(d0, cache_dir, monkeypatch):
    pytest.importorskip("onnxruntime")
    model, config = d0
    # None in sys.modules makes `import openvino` fail as when it is not installed.
    monkeypatch.setitem(sys.modules, "openvino", None)
    backend = create_backend("auto", model, config, "cpu", "fp32", cache_dir=cache_dir)
    assert backend.name == "onnxruntime"
    assert backend.selection.startswith("auto on cpu fp32: onnxruntime (openvino cannot be imported: openvino")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    backend = create_backend("auto", model, config, "cpu", "fp32", cache_dir=cache_dir)
    assert backend.name == "torch" and "onnxruntime cannot be imported" in backend.selection


def test_auto_skips_a_backend_that_fails_to_start_and_says_why(d0, tmp_path, caplog):
    model, config = d0
    # A missing onnx_path makes both ONNX backends fail; torch does not take the option and runs.
    with caplog.at_level("WARNING", logger="hybridnets_ros.inference.backends"):
        backend = create_backend("auto", model, config, "cpu", "fp32", onnx_path=tmp_path / "missing.onnx")
    assert backend.name == "torch"
    available = [c.name for c in auto.candidates(CPU, "fp32") if c.available and c.name != "torch"]
    for name in available:
        assert f"{name} failed to start: FileNotFoundError" in backend.selection
        assert f"{name} failed to start" in caplog.text
    assert "missing.onnx" in backend.selection


def test_auto_int8_without_a_quantising_runtime_is_a_clear_error(d0, monkeypatch):
    model, config = d0
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ValueError, match="backend auto found no backend for int8 on cpu: openvino cannot be imported"):
        create_backend("auto", model, config, "cpu", "int8")


def test_an_explicit_backend_and_precision_win(d0):
    model, config = d0
    backend = create_backend("torch", model, config, "cpu", "fp32")
    assert (backend.name, backend.precision, backend.selection) == ("torch", "fp32", "requested")
    with pytest.raises(ValueError, match="int8 is quantised by the openvino .CPU. and tensorrt .CUDA. backends only"):
        create_backend("torch", model, config, "cpu", "int8")
    with pytest.raises(ValueError, match=r"unknown inference backend 'tflite'.* or auto"):
        create_backend("tflite", model, config, "cpu", "fp32")


def test_from_weights_defaults_to_auto(tmp_path, d0, monkeypatch):
    from hybridnets_ros.model.checkpoint import save_checkpoint

    model, config = d0
    weights = save_checkpoint(tmp_path / "d0.pt", model, config)
    # Only torch importable: the default must still be the automatic choice, not a fixed backend.
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    pipeline = HybridNetsPipeline.from_weights(weights, device="cpu")
    assert pipeline.backend.name == "torch" and pipeline.precision == "fp32"
    assert pipeline.backend.selection.startswith("auto on cpu fp32: torch (")


def test_the_reason_is_in_the_model_diagnostics():
    info = diagnostics.ModelInfo("m", "w.pt", "openvino", "cpu", "fp32",
                                 backend_selection="auto on cpu fp32: openvino (fastest installed)")
    values = diagnostics.status_values(diagnostics.model_status("hybridnets", info, {}))
    assert values["backend"] == "openvino"
    assert values["backend_selection"] == "auto on cpu fp32: openvino (fastest installed)"
