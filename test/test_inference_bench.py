"""The inference benchmark's frames: synthetic by default, a folder with --images, a clear refusal otherwise."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from hybridnets_ros.inference.bench import load_frames, main


def test_without_images_the_frames_are_synthetic_and_reproducible():
    frames, source = load_frames(3, None)
    again, _ = load_frames(3, None)
    assert [f.shape for f in frames] == [(720, 1280, 3)] * 3 and all(f.dtype == np.uint8 for f in frames)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))
    assert not np.array_equal(frames[0], frames[1])
    assert source == "3 synthetic 1280x720 road-like frames"


def test_images_are_read_as_rgb_and_cycled(tmp_path: Path):
    blue_bgr = np.zeros((40, 60, 3), np.uint8)
    blue_bgr[:, :, 0] = 200
    cv2.imwrite(str(tmp_path / "a.png"), blue_bgr)
    cv2.imwrite(str(tmp_path / "b.png"), np.full((30, 50, 3), 90, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    frames, source = load_frames(3, tmp_path)
    assert [f.shape for f in frames] == [(40, 60, 3), (30, 50, 3), (40, 60, 3)]
    assert frames[0][0, 0].tolist() == [0, 0, 200]  # rgb
    assert source == f"3 frames from 2 images in {tmp_path} (50x30, 60x40)"


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_a_folder_without_images_is_refused_with_exit_code_2(tmp_path: Path, capsys, make):
    folder = make(tmp_path)
    with pytest.raises(FileNotFoundError, match="give a folder of camera frames"):
        load_frames(1, folder)
    assert main(["--images", str(folder), "--backends", "torch"]) == 2
    assert f"--images '{folder}': no folder with images" in capsys.readouterr().err
