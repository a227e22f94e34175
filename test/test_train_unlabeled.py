"""Unlabeled frame sources: real rosbag2 files (raw and compressed topics), image folders and videos, streamed."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from hybridnets_ros.training.unlabeled import (
    Subsample,
    UnlabeledSourceError,
    UnlabeledStream,
    raw_image_to_rgb,
)

STORE = get_typestore(Stores.ROS2_KILTED)
NS = 1_000_000_000


def frame_image(index: int, hw: tuple[int, int] = (24, 32)) -> np.ndarray:
    """(H,W,3) uint8 RGB whose red channel is 10 * index (identifies the frame), green/blue distinct."""
    image = np.zeros((*hw, 3), np.uint8)
    image[..., 0] = 10 * index
    image[..., 1] = 100
    image[..., 2] = 200
    return image


def _header(stamp: int):
    time_cls, header_cls = STORE.types["builtin_interfaces/msg/Time"], STORE.types["std_msgs/msg/Header"]
    return header_cls(stamp=time_cls(sec=stamp // NS, nanosec=stamp % NS), frame_id="camera")


def write_bag(path: Path, topics: dict[str, str], count: int, period_ns: int = 100_000_000) -> None:
    """A bag with ``count`` frames on each topic; topics map name -> 'raw' (bgr8 Image) or 'png' (CompressedImage)."""
    image_cls = STORE.types["sensor_msgs/msg/Image"]
    compressed_cls = STORE.types["sensor_msgs/msg/CompressedImage"]
    with Writer(path, version=9) as writer:
        connections = {
            topic: writer.add_connection(
                topic, "sensor_msgs/msg/Image" if kind == "raw" else "sensor_msgs/msg/CompressedImage", typestore=STORE)
            for topic, kind in topics.items()}
        for i in range(count):
            stamp = 10 * NS + i * period_ns
            rgb = frame_image(i)
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            for topic, kind in topics.items():
                if kind == "raw":
                    h, w = bgr.shape[:2]
                    msg = image_cls(header=_header(stamp), height=h, width=w, encoding="bgr8", is_bigendian=0,
                                    step=w * 3, data=bgr.reshape(-1))
                    writer.write(connections[topic], stamp, STORE.serialize_cdr(msg, "sensor_msgs/msg/Image"))
                else:
                    data = np.frombuffer(cv2.imencode(".png", bgr)[1].tobytes(), np.uint8)
                    msg = compressed_cls(header=_header(stamp), format="png", data=data)
                    writer.write(connections[topic], stamp,
                                 STORE.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))


def frame_ids(stream: UnlabeledStream, pass_index: int = 0) -> list[int]:
    """The frame index (red / 10) of every decoded frame of one pass, in stream order."""
    return [int(stream.decode(frame)[0, 0, 0]) // 10 for frame in stream.frames(pass_index)]


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "drive"
    write_bag(path, {"/cam/raw": "raw", "/cam/compressed": "png"}, count=12)
    return path


@pytest.mark.parametrize("topic", ["/cam/raw", "/cam/compressed"])
def test_bag_topics_stream_every_frame_with_exact_pixels(bag, topic):
    stream = UnlabeledStream([bag], (128, 128), topic=topic, shuffle_buffer=1)
    frames = list(stream.frames())
    assert len(frames) == 12
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(stream.decode(frame), frame_image(i))
        assert frame.stamp_ns == 10 * NS + i * 100_000_000


def test_bag_needs_topic_when_it_has_several_and_names_them(bag):
    with pytest.raises(UnlabeledSourceError, match="2 image topics.*/cam/compressed, /cam/raw.*--topic"):
        UnlabeledStream([bag], (128, 128))
    with pytest.raises(UnlabeledSourceError, match="no topic '/cam/other'"):
        UnlabeledStream([bag], (128, 128), topic="/cam/other")


def test_every_and_min_gap_subsample_by_index_and_by_recording_time(bag):
    every = UnlabeledStream([bag], (128, 128), topic="/cam/raw", subsample=Subsample(every=5), shuffle_buffer=1)
    assert frame_ids(every) == [0, 5, 10]
    # frames are 0.1 s apart: a 0.25 s gap keeps every third frame (0.3 s)
    gap = UnlabeledStream([bag], (128, 128), topic="/cam/raw", subsample=Subsample(min_gap_s=0.25), shuffle_buffer=1)
    assert frame_ids(gap) == [0, 3, 6, 9]


def test_several_bags_are_read_in_order(tmp_path):
    write_bag(tmp_path / "a", {"/cam": "raw"}, count=3)
    write_bag(tmp_path / "b", {"/cam": "png"}, count=2)
    stream = UnlabeledStream([tmp_path / "a", tmp_path / "b"], (128, 128), shuffle_buffer=1)
    assert frame_ids(stream) == [0, 1, 2, 0, 1]


def test_shuffle_is_deterministic_per_seed_and_pass_and_a_permutation(bag):
    def make(seed):
        return UnlabeledStream([bag], (128, 128), topic="/cam/raw", seed=seed, shuffle_buffer=6)

    first = frame_ids(make(3))
    assert sorted(first) == list(range(12))
    assert first != list(range(12))
    assert frame_ids(make(3)) == first
    assert frame_ids(make(4)) != first
    assert frame_ids(make(3), pass_index=1) != first


def test_batches_resume_exactly_from_a_stored_position(bag):
    stream = UnlabeledStream([bag], (128, 128), topic="/cam/compressed", seed=1, shuffle_buffer=4)
    run = stream.batches(batch_size=5)
    whole = [next(run) for _ in range(5)]  # 2 batches per pass of 12 (the short tail is dropped)
    assert [(p, c) for _, p, c in whole] == [(0, 5), (0, 10), (1, 5), (1, 10), (2, 5)]
    _, pass_index, consumed = whole[2]
    resumed = stream.batches(batch_size=5, start=(pass_index, consumed))
    for expected in whole[3:]:
        images, p, c = next(resumed)
        assert (p, c) == expected[1:]
        assert images.equal(expected[0])
    assert whole[0][0].shape == (5, 3, 128, 128) and whole[0][0].dtype == torch.uint8


def test_too_few_frames_for_a_batch_is_a_clear_error(bag):
    stream = UnlabeledStream([bag], (128, 128), topic="/cam/raw", subsample=Subsample(every=6))
    with pytest.raises(UnlabeledSourceError, match="only 2 frames per pass, fewer than the batch size 4"):
        next(stream.batches(4))


def test_image_folder_streams_sorted_files_and_refuses_min_gap(tmp_path):
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"f{i:02d}.png"), frame_image(i)[..., ::-1])
    (tmp_path / "notes.txt").write_text("not an image")
    stream = UnlabeledStream([tmp_path], (128, 128), shuffle_buffer=1)
    assert frame_ids(stream) == [0, 1, 2, 3]
    gap = UnlabeledStream([tmp_path], (128, 128), subsample=Subsample(min_gap_s=1.0))
    with pytest.raises(UnlabeledSourceError, match="--min-gap needs frame time stamps.*--every"):
        list(gap.frames())


def test_video_frames_subsampled(tmp_path):
    path = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for i in range(9):
        writer.write(np.ascontiguousarray(frame_image(i)[..., ::-1]))
    writer.release()
    stream = UnlabeledStream([path], (128, 128), subsample=Subsample(every=4), shuffle_buffer=1)
    frames = list(stream.frames())
    assert len(frames) == 3
    reds = [int(stream.decode(f)[..., 0].mean()) for f in frames]
    assert all(abs(r - 10 * i) <= 6 for r, i in zip(reds, (0, 4, 8)))  # JPEG-compressed video: near, not exact


def test_raw_encodings_convert_to_rgb():
    rgb = frame_image(7, (4, 6))
    bgr = rgb[..., ::-1]
    padded = np.zeros((4, 6 * 3 + 2), np.uint8)  # step with 2 bytes of row padding
    padded[:, :18] = bgr.reshape(4, 18)
    np.testing.assert_array_equal(raw_image_to_rgb("bgr8", 4, 6, 20, False, padded.reshape(-1), "t"), rgb)
    grey = np.arange(24, dtype=np.uint16).reshape(4, 6) * 256 + 5  # high bytes 0..23, low byte 5
    little = raw_image_to_rgb("mono16", 4, 6, 12, False, grey.astype("<u2").view(np.uint8).reshape(-1), "t")
    big = raw_image_to_rgb("mono16", 4, 6, 12, True, grey.astype(">u2").view(np.uint8).reshape(-1), "t")
    np.testing.assert_array_equal(little[..., 1], np.arange(24).reshape(4, 6))
    np.testing.assert_array_equal(big, little)
    with pytest.raises(UnlabeledSourceError, match="unsupported image encoding '32FC1'"):
        raw_image_to_rgb("32FC1", 4, 6, 24, False, np.zeros(96, np.uint8), "t")
    with pytest.raises(UnlabeledSourceError, match="does not match its 10 data bytes"):
        raw_image_to_rgb("rgb8", 4, 6, 18, False, np.zeros(10, np.uint8), "t")


def test_missing_or_unknown_sources_are_refused_at_once(tmp_path):
    with pytest.raises(UnlabeledSourceError, match="missing: no such file or folder"):
        UnlabeledStream([tmp_path / "missing"], (128, 128))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UnlabeledSourceError, match="notes.txt: not an image folder, a video"):
        UnlabeledStream([tmp_path / "notes.txt"], (128, 128))
