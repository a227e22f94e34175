"""ONNX Runtime / OpenVINO / TensorRT backends on a small d0: same results as torch through the pipeline, the ONNX
cache, missing-package errors and the TensorRT engine-cache key. The golden d3 checks are in test_backends_golden."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from export_support import assert_same_detections, mask_agreement, robust_postprocess, small_d0_model, torch_pipeline
from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.inference.export import exporter as export_module
from hybridnets_ros.inference.backends import create_backend
from hybridnets_ros.inference.backends import onnx_cache, tensorrt_backend
from hybridnets_ros.inference.backends.optional_import import BackendUnavailableError
from hybridnets_ros.inference.pipeline import HybridNetsPipeline
from hybridnets_ros.inference.sample_frames import synthetic_frames
from hybridnets_ros.model import load_model_config

CPU_BACKENDS = ("onnxruntime", "openvino")


@pytest.fixture(scope="module")
def d0():
    return small_d0_model()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def raw_onnx(d0, cache_dir: Path) -> Path:
    """Exported once for the module, through the cache as a backend does it."""
    model, config = d0
    return onnx_cache.cached_raw_onnx(model, config, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    # Different sizes: letterboxes differ per frame in one batch.
    return synthetic_frames(2, (720, 1280), seed=3) + synthetic_frames(1, (480, 640), seed=4)


@pytest.fixture(scope="module")
def postprocess(d0, frames) -> DetectionThresholds:
    """A threshold in a clear gap of the scores: the candidate sets cannot depend on float noise."""
    return robust_postprocess(*d0, frames)


@pytest.fixture(scope="module")
def expected(d0, frames, postprocess):
    model, config = d0
    return torch_pipeline(model, config, postprocess)(frames)


@pytest.mark.slow
@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_backend_matches_torch_through_the_pipeline(name, d0, raw_onnx, cache_dir, frames, postprocess, expected):
    model, config = d0
    backend = create_backend(name, model, config, "cpu", "fp32", cache_dir=cache_dir)
    assert backend.name == name and backend.precision == "fp32" and backend.device == torch.device("cpu")
    pipeline = HybridNetsPipeline(backend, config, postprocess)
    # batch 3 (mixed sizes), then batch 1: the raw model's batch is dynamic
    results = pipeline(frames) + pipeline(frames[:1])
    for i, (got, want) in enumerate(zip(results, [*expected, expected[0]])):
        assert len(want.detections) > 0
        # The small model's scores are crowded (1e-4 apart), so near-equal ones may swap ranks: order-insensitive.
        assert_same_detections(want.detections, got.detections, f"{name} frame {i}", strict_order=False)
        assert mask_agreement(want.seg_mask, got.seg_mask) >= 0.999


@pytest.mark.slow
@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_backend_raw_heads_close_to_torch(name, d0, raw_onnx, frames):
    model, config = d0
    backend = create_backend(name, model, config, "cpu", "fp32", onnx_path=raw_onnx)
    x, _ = torch_pipeline(model, config).preprocess(frames)
    with torch.inference_mode():
        want = model(x)
    got = backend.forward(x)
    for field, a, b in zip(want._fields, want, got):
        assert b.dtype == torch.float32 and b.shape == a.shape, field
        assert float((a - b).abs().max()) < {"regression": 5e-3, "classification": 1e-3, "segmentation": 5e-2}[field]


@pytest.mark.slow
def test_cache_hit_exports_nothing_and_keys_follow_the_weights(d0, raw_onnx, cache_dir, monkeypatch):
    model, config = d0
    assert sorted(p.name for p in cache_dir.glob("*.onnx")) == [raw_onnx.name]

    def no_export(*args, **kwargs):
        raise AssertionError("the cached ONNX file should have been reused")

    monkeypatch.setattr(export_module, "export_onnx", no_export)
    assert onnx_cache.cached_raw_onnx(model, config, cache_dir=cache_dir) == raw_onnx

    digest = onnx_cache.state_dict_digest(model)
    assert onnx_cache.state_dict_digest(copy.deepcopy(model)) == digest  # same weights, another module: same key
    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed.parameters())[0].add_(1e-3)
    assert onnx_cache.state_dict_digest(changed) != digest
    base = onnx_cache.onnx_cache_key(digest, config, 18, None, "dynamo")
    other_config = type(config).from_dict({**config.to_dict(), "input_size": [256, 512]})
    variants = [
        onnx_cache.onnx_cache_key(onnx_cache.state_dict_digest(changed), config, 18, None, "dynamo"),
        onnx_cache.onnx_cache_key(digest, other_config, 18, None, "dynamo"),
        onnx_cache.onnx_cache_key(digest, config, 17, None, "dynamo"),
        onnx_cache.onnx_cache_key(digest, config, 18, 4, "dynamo"),
        onnx_cache.onnx_cache_key(digest, config, 18, None, "torchscript"),
    ]
    assert base not in variants and len(set(variants)) == len(variants)


def test_cache_dir_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(onnx_cache.CACHE_ENV, str(tmp_path / "from_env"))
    assert onnx_cache.cache_root() == tmp_path / "from_env" and (tmp_path / "from_env").is_dir()
    assert onnx_cache.cache_root(tmp_path / "explicit") == tmp_path / "explicit"


@pytest.mark.slow
def test_backends_refuse_a_postprocessed_file_and_fp16_on_cpu(d0, tmp_path, raw_onnx):
    model, config = d0
    onnx = pytest.importorskip("onnx")
    post = tmp_path / "post.onnx"
    proto = onnx.load(str(raw_onnx))
    for prop in proto.metadata_props:
        if prop.key == "hybridnets_ros.variant":
            prop.value = "postprocessed"
    onnx.save(proto, str(post))
    for name in CPU_BACKENDS:
        with pytest.raises(ValueError, match="--variant raw"):
            create_backend(name, model, config, "cpu", "fp32", onnx_path=post)
        with pytest.raises(ValueError, match="fp16"):
            create_backend(name, model, config, "cpu", "fp16", onnx_path=raw_onnx)
    with pytest.raises(FileNotFoundError, match="hybridnets-export"):
        create_backend("onnxruntime", model, config, "cpu", "fp32", onnx_path=tmp_path / "missing.onnx")


@pytest.mark.parametrize(
    ("backend", "module", "requirement"),
    [("onnxruntime", "onnxruntime", "onnxruntime==1.32.0"), ("openvino", "openvino", "openvino==2026.4.1"),
     ("tensorrt", "tensorrt", "tensorrt")],
)
def test_missing_runtime_package_names_the_pip_package(backend, module, requirement, monkeypatch):
    config = load_model_config("hybridnets_d0_synth")
    # None in sys.modules makes `import module` raise ImportError, as when the package is not installed. The
    # runtime is imported before the model is looked at, so no model is needed.
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(BackendUnavailableError) as info:
        create_backend(backend, None, config, "cpu", "fp32")
    assert f"pip install {requirement}" in str(info.value)
    assert isinstance(info.value, ImportError) and info.value.name == module


def test_tensorrt_engine_key_changes_with_every_input():
    base = dict(gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0), trt_version="10.13.0",
                input_shape=(3, 384, 640), max_batch=1, precision="fp16", onnx_digest="a" * 64)
    changes = dict(gpu_name="NVIDIA GeForce RTX 4090", compute_capability=(8, 9), trt_version="10.14.1",
                   input_shape=(3, 256, 512), max_batch=8, precision="fp32", onnx_digest="b" * 64,
                   calibration_digest="c" * 64)
    reference = tensorrt_backend.engine_cache_key(**base)
    assert reference == tensorrt_backend.engine_cache_key(**base)
    keys = {tensorrt_backend.engine_cache_key(**{**base, field: value}) for field, value in changes.items()}
    assert len(keys) == len(changes) and reference not in keys


def _tensorrt_gpu():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it needs an NVIDIA GPU)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA device; this machine has none")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_matches_torch_and_reuses_its_engine(precision, d0, raw_onnx, cache_dir, frames, postprocess,
                                                      expected):
    _tensorrt_gpu()
    model, config = d0
    backend = create_backend("tensorrt", model, config, "cuda", precision, onnx_path=raw_onnx, cache_dir=cache_dir,
                             max_batch=4)
    engines = sorted((cache_dir / "tensorrt").glob(f"*_{precision}_b4_*.engine"))
    assert len(engines) == 1
    pipeline = HybridNetsPipeline(backend, config, postprocess)
    results = pipeline(frames)
    for i, (got, want) in enumerate(zip(results, expected)):
        if precision == "fp32":
            assert_same_detections(want.detections, got.detections, f"tensorrt frame {i}", strict_order=False)
        assert mask_agreement(want.seg_mask, got.seg_mask) >= (0.999 if precision == "fp32" else 0.99)
    create_backend("tensorrt", model, config, "cuda", precision, onnx_path=raw_onnx, cache_dir=cache_dir, max_batch=4)
    assert sorted((cache_dir / "tensorrt").glob(f"*_{precision}_b4_*.engine")) == engines
