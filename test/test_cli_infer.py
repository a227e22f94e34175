"""hybridnets-infer: golden variant C results through its json/png files, sources and error handling."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from golden_support import (
    DEMO_IMAGES,
    MIN_MASK_AGREEMENT,
    assert_matches_golden,
    load_post,
    mask_agreement,
    run_threshold,
)
from hybridnets_ros.inference import cli
from hybridnets_ros.inference.postprocess import Detections


@pytest.fixture(scope="module")
def golden_posts(golden_dir):
    return {i: load_post(golden_dir, i) for i in DEMO_IMAGES}


@pytest.fixture(scope="module")
def folder_run(variant_c_weights, demo_images_dir, golden_posts, tmp_path_factory):
    """One CLI run (batch size 1, as the golden run) over a folder holding demo images 1-3, at the lowest of their
    golden run thresholds (golden_support): each image's boxes above its own cut are compared."""
    source = tmp_path_factory.mktemp("source")
    for i in DEMO_IMAGES:
        shutil.copy(demo_images_dir / f"{i}.jpg", source / f"{i}.jpg")
    (source / "notes.txt").write_text("not an image")
    output = tmp_path_factory.mktemp("output")
    threshold = min(run_threshold(p) for p in golden_posts.values())
    status = cli.main([
        "--weights", str(variant_c_weights), "--source", str(source), "--output", str(output / "results"),
        "--device", "cpu", "--score-threshold", repr(threshold), "--nms-iou-threshold", "0.3", "--batch-size", "1",
    ])
    return status, output / "results"


@pytest.mark.slow
def test_folder_run_writes_golden_results(folder_run, golden_posts):
    status, output = folder_run
    assert status == 0
    assert sorted(p.name for p in output.iterdir()) == sorted(
        f"{i}{suffix}" for i in DEMO_IMAGES for suffix in (".json", "_seg.png", "_overlay.jpg")
    )
    for i in DEMO_IMAGES:
        post = golden_posts[i]
        record = json.loads((output / f"{i}.json").read_text())
        assert record["image_size"] == [720, 1280]
        boxes, scores = np.array(record["boxes"], dtype=np.float32), np.array(record["scores"], dtype=np.float32)
        assert set(record["classes"]) == {"car"} and len(record["classes"]) == len(scores)
        # Greedy NMS decides each box from higher-scored boxes only, so a run at a lower threshold holds this image's
        # golden boxes above its own cut.
        got = Detections(boxes.reshape(-1, 4), scores, np.zeros(len(scores), dtype=np.int64))
        assert assert_matches_golden(got, post, f"demo image {i}") > 10
        mask = cv2.imread(str(output / f"{i}_seg.png"), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.shape == (720, 1280)
        assert mask_agreement(mask, post["few_seg_mask_orig"]) >= MIN_MASK_AGREEMENT
        overlay = cv2.imread(str(output / f"{i}_overlay.jpg"))
        assert overlay.shape == (720, 1280, 3)


def test_batched_run_on_mixed_sizes(tmp_path):
    from hybridnets_ros.model.checkpoint import save_checkpoint
    from hybridnets_ros.model.config import load_model_config
    from hybridnets_ros.model.hybridnets import HybridNets

    torch.manual_seed(0)
    config = load_model_config("hybridnets_d0_synth")
    model = HybridNets(config).eval()
    weights = save_checkpoint(tmp_path / "d0.pt", model, config)
    source = tmp_path / "frames"
    source.mkdir()
    sizes = {"a": (48, 64), "b": (100, 75), "c": (30, 200)}
    rng = np.random.default_rng(0)
    for name, hw in sizes.items():
        cv2.imwrite(str(source / f"{name}.png"), rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    status = cli.main(["--weights", str(weights), "--source", str(source), "--output", str(tmp_path / "out"),
                       "--device", "cpu", "--batch-size", "2", "--score-threshold", "0"])
    assert status == 0
    for name, hw in sizes.items():
        record = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert record["image_size"] == list(hw) and 0 < len(record["boxes"]) <= 100
        boxes = np.array(record["boxes"])
        assert (boxes[:, [0, 2]] <= hw[1]).all() and (boxes[:, [1, 3]] <= hw[0]).all()
        assert cv2.imread(str(tmp_path / "out" / f"{name}_seg.png"), cv2.IMREAD_UNCHANGED).shape == hw
        assert cv2.imread(str(tmp_path / "out" / f"{name}_overlay.jpg")).shape == (*hw, 3)


def test_video_frames_are_named_by_index(tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    assert writer.isOpened()
    for k in range(3):
        writer.write(np.full((48, 64, 3), 40 * k, np.uint8))
    writer.release()
    frames, total = cli.open_source(video)
    names = [name for name, frame in frames]
    assert names == ["clip_000000", "clip_000001", "clip_000002"]
    assert total in (3, None)


def test_single_image_source(demo_images_dir):
    frames, total = cli.open_source(demo_images_dir / "1.jpg")
    (name, frame), = list(frames)
    assert total == 1 and name == "1" and frame.shape == (720, 1280, 3)


@pytest.mark.parametrize("kind", ["missing", "empty_folder", "broken_image", "not_media"])
def test_bad_sources_fail_clearly(tmp_path, caplog, kind):
    if kind == "missing":
        source, message = tmp_path / "nope.jpg", "does not exist"
    elif kind == "empty_folder":
        source, message = tmp_path / "empty", "contains no images"
        source.mkdir()
    elif kind == "broken_image":
        source, message = tmp_path / "broken.jpg", "cannot read image"
        source.write_bytes(b"\xff\xd8 not really a jpeg")
    else:
        source, message = tmp_path / "data.bin", "cannot open"
        source.write_bytes(b"\x00" * 64)
    status = cli.main(["--source", str(source), "--output", str(tmp_path / "out"), "--device", "cpu"])
    assert status == 2
    assert message in caplog.text
    assert not (tmp_path / "out").exists()


def test_unusable_weights_fail_clearly(tmp_path, demo_images_dir, caplog):
    weights = tmp_path / "truncated.pt"
    weights.write_bytes(b"PK\x03\x04 truncated")
    status = cli.main(["--weights", str(weights), "--source", str(demo_images_dir / "1.jpg"),
                       "--output", str(tmp_path / "out"), "--device", "cpu"])
    assert status == 2  # the weights are input, as for hybridnets-eval and hybridnets-train
    assert "cannot be read as a torch file" in caplog.text and str(weights) in caplog.text


def test_bad_arguments_are_rejected(tmp_path, demo_images_dir, caplog):
    args = ["--source", str(demo_images_dir / "1.jpg"), "--output", str(tmp_path / "out")]
    assert cli.main([*args, "--batch-size", "0"]) == 2
    assert cli.main([*args, "--score-threshold", "1.5"]) == 2
    assert "score_threshold" in caplog.text
    with pytest.raises(SystemExit):
        cli.main([*args, "--backend", "tflite"])
