"""The raw-heads ONNX variant: a static batch through the legacy TorchScript exporter, checked with verify_onnx."""
from __future__ import annotations

import json

import pytest
import torch

from export_support import small_d0_model
from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.inference.export.exporter import RAW_OUTPUTS, export_onnx, read_metadata
from hybridnets_ros.inference.export.verify import verify_onnx
from hybridnets_ros.inference.sample_frames import synthetic_frames

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def d0():
    return small_d0_model()


@pytest.fixture(scope="module")
def static_export(d0, tmp_path_factory: pytest.TempPathFactory):
    model, config = d0
    path = tmp_path_factory.mktemp("raw") / "d0_raw_b2.onnx"
    return export_onnx(model, config, path, variant="raw", batch=2, opset=17, exporter="torchscript")


@pytest.mark.slow
def test_static_batch_shapes_names_and_metadata(static_export, d0):
    model, config = d0
    session = ort.InferenceSession(str(static_export), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "images" and inp.shape == [2, 3, *config.input_size] and inp.type == "tensor(float)"
    assert [o.name for o in session.get_outputs()] == list(RAW_OUTPUTS)
    assert session.get_outputs()[0].shape[0] == 2
    meta = read_metadata(static_export)
    assert meta["variant"] == "raw" and meta["batch"] == "2"
    assert json.loads(meta["model_config"])["input_size"] == list(config.input_size)
    x = torch.randn(2, 3, *config.input_size)
    with torch.inference_mode():
        want = model(x)
    for name, got, ref in zip(RAW_OUTPUTS, session.run(None, {"images": x.numpy()}), want):
        assert got.shape == tuple(ref.shape), name
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"images": x[:1].numpy()})


@pytest.mark.slow
def test_verify_reports_agreement_on_repeated_frames(static_export, d0):
    model, config = d0
    report = verify_onnx(static_export, model, config, synthetic_frames(1), DetectionThresholds(score_threshold=0.02),
                         batch=2)
    assert len(report.frames) == 2  # the one frame repeated to the static batch
    assert set(report.max_abs_diff) == set(RAW_OUTPUTS)
    assert report.max_abs_diff["classification"] < 1e-3 and report.max_abs_diff["segmentation"] < 5e-2
    assert all(f.torch_boxes > 0 for f in report.frames)
    assert report.ok, "\n".join(report.lines())


def test_export_rejects_bad_arguments(d0, tmp_path):
    model, config = d0
    with pytest.raises(ValueError, match="exporter"):
        export_onnx(model, config, tmp_path / "a.onnx", exporter="tracing")
    with pytest.raises(ValueError, match="variant"):
        export_onnx(model, config, tmp_path / "a.onnx", variant="heads")
    with pytest.raises(ValueError, match="batch"):
        export_onnx(model, config, tmp_path / "a.onnx", batch=0)
    assert not list(tmp_path.iterdir()), "a failed export must not leave files behind"
