"""INT8: calibration sources (folder, video, rosbag2, synthetic) and their digest, OpenVINO INT8 on the bundled
d0 model (runs, agrees with fp32, cached under the calibration digest), the precision it runs at, and
``hybridnets-export --precision int8``."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hybridnets_ros import resources
from hybridnets_ros.inference import calibration as calib
from hybridnets_ros.inference.export import cli as export_module
from hybridnets_ros.inference.backends import create_backend, openvino_backend
from hybridnets_ros.inference.box_pairing import box_agreement
from hybridnets_ros.inference.pipeline import HybridNetsPipeline
from hybridnets_ros.inference.sample_frames import synthetic_frames
from hybridnets_ros.model import build_model, load_model_config

CALIBRATION_FRAMES = 12  # few, to keep the test short; the CLI and node default to 64
# int8 vs fp32 on the bundled model (measured: 97.5..99.9 % of the mask pixels equal, 86..100 % of the boxes
# matched): loose enough for any x86 CPU's int8 kernels, tight enough that a broken quantisation fails.
MIN_INT8_MASK_AGREEMENT = 0.95
MIN_INT8_BOX_RECALL = 0.8
MATCH_IOU = 0.5
# fp32 boxes this confident must be found by int8 too; weaker ones may fall either side of the 0.25 threshold.
CONFIDENT = 0.4


@pytest.fixture(scope="module")
def bundled():
    path = resources.bundled_weights()
    if not path.is_file():
        pytest.skip(f"the bundled model is not installed at {path}")
    return build_model(path, None, device="cpu")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("int8_cache")


@pytest.fixture(scope="module")
def scenes() -> list[np.ndarray]:
    """Synthetic driving scenes (BGR) the bundled model was trained on the like of; not calibration frames."""
    from hybridnets_ros.synth.scene import generate_scene

    return [generate_scene(np.random.default_rng(5000 + i), (1280, 720)).image_bgr for i in range(4)]


# ---- calibration sources ----------------------------------------------------------------------------------------


def test_spread_takes_evenly_spaced_frames_first_and_last_included():
    assert calib.spread(10, 4) == [0, 3, 6, 9]
    assert calib.spread(3, 64) == [0, 1, 2]
    assert calib.spread(0, 5) == []


def test_folder_video_and_bag_sources_give_the_requested_frames(tmp_path):
    from hybridnets_ros.ros.bag import write_image_bag

    frames = synthetic_frames(6, (96, 160), seed=11)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:02d}.png"), frame)
    got, encodings = calib.calibration_frames(str(folder), 3)
    assert len(got) == 3 and encodings == ["bgr8"] * 3
    np.testing.assert_array_equal(got[0], frames[0])
    np.testing.assert_array_equal(got[-1], frames[-1])

    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 96))
    for frame in frames:
        writer.write(frame)
    writer.release()
    got, encodings = calib.calibration_frames(str(video), 4)
    assert len(got) == 4 and got[0].shape == (96, 160, 3) and encodings == ["bgr8"] * 4

    bag = tmp_path / "bag"
    write_image_bag(bag, [f[:, :, ::-1].copy() for f in frames], encoding="rgb8")
    got, encodings = calib.calibration_frames(str(bag), 2)
    assert encodings == ["rgb8", "rgb8"]
    np.testing.assert_array_equal(got[0], frames[0][:, :, ::-1])
    np.testing.assert_array_equal(got[1], frames[-1][:, :, ::-1])


def test_the_digest_names_the_network_inputs():
    config = load_model_config("hybridnets_d0_synth")
    frames = synthetic_frames(3, (120, 200), seed=1)
    bgr = [f[:, :, ::-1].copy() for f in frames]
    as_rgb = calib.network_inputs(frames, ["rgb8"] * 3, config)
    as_bgr = calib.network_inputs(bgr, ["bgr8"] * 3, config)
    # The same pictures in either channel order are the same network inputs, hence the same calibration set.
    torch.testing.assert_close(as_rgb, as_bgr, rtol=0, atol=0)
    assert as_rgb.shape == (3, 3, *config.input_size)
    assert calib.inputs_digest(as_rgb) == calib.inputs_digest(as_bgr)
    assert calib.inputs_digest(as_rgb[:2]) != calib.inputs_digest(as_rgb)
    other = calib.network_inputs(synthetic_frames(3, (120, 200), seed=2), ["rgb8"] * 3, config)
    assert calib.inputs_digest(other) != calib.inputs_digest(as_rgb)


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: tmp / "nope", "does not exist: give a folder of images, a video, a rosbag2 bag, or 'synthetic'"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "has no images"),
    (lambda tmp: (tmp / "notes.txt").write_text("hello") and tmp / "notes.txt", "neither a folder, a rosbag2 bag nor"),
])
def test_a_bad_calibration_source_says_what_is_wrong(tmp_path, make, message):
    with pytest.raises(calib.CalibrationSourceError, match=message):
        calib.calibration_frames(str(make(tmp_path)), 4)


def test_a_bag_without_images_is_refused(tmp_path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    string = store.types["std_msgs/msg/String"]
    with Writer(tmp_path / "bag", version=8) as writer:
        connection = writer.add_connection("/chatter", string.__msgtype__, typestore=store)
        writer.write(connection, 1, store.serialize_cdr(string(data="hi"), string.__msgtype__))
    with pytest.raises(calib.CalibrationSourceError, match=r"no sensor_msgs/Image .*'/chatter \(std_msgs/msg/String\)'"):
        calib.calibration_frames(str(tmp_path / "bag"), 4)


# ---- OpenVINO INT8 ------------------------------------------------------------------------------------------------


def box_recall(reference: np.ndarray, boxes: np.ndarray) -> float:
    """Fraction of the reference boxes (N,4) that some box of ``boxes`` overlaps with IoU >= MATCH_IOU."""
    if len(reference) == 0:
        return 1.0
    if len(boxes) == 0:
        return 0.0
    ious = box_agreement(reference, boxes)
    return float((ious.max(axis=1) >= MATCH_IOU).mean())


@pytest.mark.slow
def test_openvino_int8_runs_agrees_with_fp32_and_is_cached_by_calibration(bundled, cache_dir, scenes, tmp_path,
                                                                          caplog):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    model, config = bundled
    fp32 = HybridNetsPipeline(create_backend("openvino", model, config, "cpu", "fp32", cache_dir=cache_dir), config)
    with caplog.at_level("INFO", logger="hybridnets_ros.inference.backends.openvino_backend"):
        backend = create_backend("openvino", model, config, "cpu", "int8", cache_dir=cache_dir,
                                 calibration_frames=CALIBRATION_FRAMES)
    assert "quantising 'hybridnets_d0_synth' to INT8" in caplog.text and "INT8 quantisation finished in" in caplog.text
    assert backend.precision == "int8"
    # Precision is what was asked for: the non-quantised parts run in f32, never a silent bf16.
    assert backend.compile_properties["INFERENCE_PRECISION_HINT"] == "f32"
    int8 = HybridNetsPipeline(backend, config)
    expected, got = fp32(scenes, "bgr8"), int8(scenes, "bgr8")
    confident_count = sum(int((r.detections.scores >= CONFIDENT).sum()) for r in expected)
    assert confident_count >= len(scenes), "the scenes should hold clearly detected vehicles"
    for i, (want, have) in enumerate(zip(expected, got)):
        agreement = float((want.seg_mask == have.seg_mask).mean())
        assert agreement >= MIN_INT8_MASK_AGREEMENT, f"scene {i}: int8 mask agrees on {agreement:.4f} only"
        confident = want.detections.boxes[want.detections.scores >= CONFIDENT]
        recall = box_recall(confident, have.detections.boxes)
        assert recall >= MIN_INT8_BOX_RECALL, f"scene {i}: int8 finds {recall:.2f} of the confident fp32 boxes"

    models = sorted((cache_dir / "openvino_int8").glob("*.xml"))
    assert len(models) == 1 and models[0].with_suffix(".bin").is_file()
    stamp = models[0].stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level("INFO", logger="hybridnets_ros.inference.backends.openvino_backend"):
        create_backend("openvino", model, config, "cpu", "int8", cache_dir=cache_dir,
                       calibration_frames=CALIBRATION_FRAMES)
    assert "using cached INT8 model" in caplog.text and "quantising" not in caplog.text
    assert sorted((cache_dir / "openvino_int8").glob("*.xml")) == models and models[0].stat().st_mtime_ns == stamp

    # Other calibration data: another cache entry.
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, scene in enumerate(scenes[:2]):
        cv2.imwrite(str(folder / f"{i}.png"), scene)
    create_backend("openvino", model, config, "cpu", "int8", cache_dir=cache_dir, calibration=str(folder))
    assert len(list((cache_dir / "openvino_int8").glob("*.xml"))) == 2


def test_int8_cache_key_changes_with_every_input():
    base = dict(onnx_digest="a" * 64, calibration_digest="b" * 64, ov_version="2026.4.1", nncf_version="3.4.0")
    changes = dict(onnx_digest="c" * 64, calibration_digest="d" * 64, ov_version="2026.5.0", nncf_version="3.5.0")
    reference = openvino_backend.int8_cache_key(**base)
    assert reference == openvino_backend.int8_cache_key(**base)
    keys = {openvino_backend.int8_cache_key(**{**base, k: v}) for k, v in changes.items()}
    assert len(keys) == len(changes) and reference not in keys


@pytest.mark.slow
def test_export_cli_quantises_into_the_backend_cache_and_writes_the_ir(bundled, cache_dir, tmp_path, capsys):
    pytest.importorskip("nncf")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(synthetic_frames(3, seed=21)):
        cv2.imwrite(str(folder / f"{i}.jpg"), frame)
    output = tmp_path / "out" / "d0_int8.xml"
    argv = ["--precision", "int8", "--calibration", str(folder), "--cache-dir", str(cache_dir), "--output",
            str(output), "--log-level", "WARNING"]
    assert export_module.main(argv) == 0
    printed = capsys.readouterr().out
    cached = Path(printed.split("OpenVINO INT8 model (the openvino backend's cache): ")[1].split()[0])
    assert cached.parent == cache_dir / "openvino_int8" and cached.is_file()
    assert output.read_bytes() == cached.read_bytes()
    assert output.with_suffix(".bin").read_bytes() == cached.with_suffix(".bin").read_bytes()
    assert export_module.main([*argv[:2], "--calibration", str(tmp_path / "nope"), "--cache-dir", str(cache_dir)]) == 2
    assert "calibration source" in capsys.readouterr().err and os.path.isdir(cache_dir)
