"""Calibration frames for INT8 quantisation, and the digest that names a calibration set.

A source is ``synthetic`` (1280x720 scenes from the package's synthetic scene generator, with seeds of their own:
none of ``hybridnets-synth``'s train or val scenes, nor the node accuracy test's), a folder of images, a video file,
or a rosbag2 bag (its folder, or its ``.db3`` / ``.mcap`` file; every ``sensor_msgs/Image`` and
``sensor_msgs/CompressedImage`` topic in it). ``count`` frames are taken evenly spread over the source. They go
through the pipeline's letterboxing and normalisation, so calibration sees exactly what the network sees at run time;
the digest is a sha256 over those network inputs, so a quantised model cached under it is reused only for the same
calibration data.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from hybridnets_ros.conventions import IMAGE_SUFFIXES
from hybridnets_ros.inference.letterbox import letterbox_images
from hybridnets_ros.inference.predictor import channel_statistics, normalize_images
from hybridnets_ros.inference.sample_frames import image_files
from hybridnets_ros.model.config import ModelConfig

SYNTHETIC = "synthetic"
DEFAULT_FRAMES = 64
# hybridnets-synth seeds its splits with SeedSequence([seed + i, code]), train 0 and val 1, and the node accuracy
# test uses code 2: calibration scenes use code 3, so they are none of those scenes.
_SYNTHETIC_SPLIT_CODE = 3
_SYNTHETIC_SIZE = (1280, 720)
_BAG_SUFFIXES = (".db3", ".mcap")
_IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
# Raw image encodings a bag may hold -> channels (as the pipeline reads them).
_RAW_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}

Frames = tuple[list[np.ndarray], list[str]]  # (H,W,C) uint8 frames and their encodings


class CalibrationSourceError(ValueError):
    """A calibration source that cannot be read, with what to do about it."""


def spread(total: int, count: int) -> list[int]:
    """``min(count, total)`` indices spread evenly over ``range(total)``, first and last included."""
    if total <= 0:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, min(count, total))})


def synthetic_source(count: int) -> Frames:
    """``count`` 1280x720 synthetic driving scenes (BGR)."""
    # Imported here: the scene generator is only needed for this source.
    from hybridnets_ros.synth.scene import generate_scene

    scenes = (generate_scene(np.random.default_rng(np.random.SeedSequence([i, _SYNTHETIC_SPLIT_CODE])),
                             _SYNTHETIC_SIZE) for i in range(count))
    frames = [scene.image_bgr for scene in scenes]
    return frames, ["bgr8"] * len(frames)


def folder_source(folder: Path, count: int) -> Frames:
    files = image_files(folder)
    if not files:
        raise CalibrationSourceError(f"calibration folder '{folder}' has no images ({', '.join(IMAGE_SUFFIXES)}): "
                                     "point it at a folder of camera frames")
    frames = []
    for index in spread(len(files), count):
        image = cv2.imread(str(files[index]), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            raise CalibrationSourceError(f"calibration image '{files[index]}' cannot be decoded: remove it or "
                                         "replace it")
        frames.append(image)
    return frames, ["bgr8"] * len(frames)


def video_source(path: Path, count: int) -> Frames:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise CalibrationSourceError(f"calibration source '{path}' is neither a folder, a rosbag2 bag nor a video "
                                     "OpenCV can open")
    try:
        decoded = []
        while (frame := capture.read())[0]:
            decoded.append(frame[1])
    finally:
        capture.release()
    if not decoded:
        raise CalibrationSourceError(f"calibration video '{path}' has no readable frames")
    frames = [decoded[i] for i in spread(len(decoded), count)]
    return frames, ["bgr8"] * len(frames)


def decode_image_message(msg: object, msgtype: str, where: str) -> tuple[np.ndarray, str]:
    """A deserialised ``sensor_msgs/Image`` or ``CompressedImage`` -> ((H,W,C) uint8, encoding)."""
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if msgtype.endswith("CompressedImage"):
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if image is None:
            raise CalibrationSourceError(f"{where}: a CompressedImage ('{msg.format}') cannot be decoded")
        return image, "bgr8"
    channels = _RAW_CHANNELS.get(msg.encoding)
    if channels is None:
        raise CalibrationSourceError(f"{where}: image encoding '{msg.encoding}' is not supported for calibration "
                                     f"(use one of {sorted(_RAW_CHANNELS)})")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if step < width * channels or data.size < height * step:
        raise CalibrationSourceError(f"{where}: {msg.encoding} image {width}x{height} with step {step} has "
                                     f"{data.size} bytes of data, too few")
    rows = data[:height * step].reshape(height, step)[:, :width * channels]
    return np.ascontiguousarray(rows.reshape(height, width, channels)), msg.encoding


def bag_source(path: Path, count: int) -> Frames:
    """Frames spread over every image topic of a rosbag2 bag (read with ``rosbags``; no ROS needed)."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    try:
        with Reader(path) as reader:
            connections = [c for c in reader.connections if c.msgtype in _IMAGE_TYPES]
            if not connections:
                topics = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
                raise CalibrationSourceError(f"rosbag2 '{path}' has no sensor_msgs/Image or CompressedImage topic "
                                             f"(topics: {topics})")
            total = sum(c.msgcount for c in connections)
            wanted = set(spread(total, count))
            frames, encodings = [], []
            for index, (connection, _, raw) in enumerate(reader.messages(connections=connections)):
                if index in wanted:
                    msg = store.deserialize_cdr(raw, connection.msgtype)
                    image, encoding = decode_image_message(msg, connection.msgtype,
                                                           f"rosbag2 '{path}' topic {connection.topic}")
                    frames.append(image)
                    encodings.append(encoding)
    except CalibrationSourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags raises its own types for damaged bags
        raise CalibrationSourceError(f"rosbag2 '{path}' cannot be read: {type(exc).__name__}: {exc}") from exc
    return frames, encodings


def is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix.lower() in _BAG_SUFFIXES


def calibration_frames(source: str, count: int = DEFAULT_FRAMES) -> Frames:
    """``count`` frames (fewer when the source has fewer) and their encodings from ``source``, see the module doc."""
    if count < 1:
        raise CalibrationSourceError(f"the number of calibration frames must be >= 1, got {count}")
    if source == SYNTHETIC:
        return synthetic_source(count)
    path = Path(source).expanduser()
    if not path.exists():
        raise CalibrationSourceError(f"calibration source '{source}' does not exist: give a folder of images, a "
                                     f"video, a rosbag2 bag, or '{SYNTHETIC}'")
    if is_bag(path):
        return bag_source(path, count)
    if path.is_dir():
        return folder_source(path, count)
    return video_source(path, count)


def network_inputs(frames: Sequence[np.ndarray], encodings: Sequence[str], config: ModelConfig) -> torch.Tensor:
    """Frames -> (N,3,H,W) float32 network inputs, letterboxed and normalised exactly as the pipeline does it."""
    letterboxed = []
    for frame, encoding in zip(frames, encodings):
        chw = torch.from_numpy(frame if frame.ndim == 3 else frame[:, :, None]).permute(2, 0, 1)
        rgb = chw.expand(3, -1, -1) if encoding == "mono8" else chw[:3]
        # One frame at a time: a whole set of full-size frames at once would need gigabytes in the resize.
        letterboxed.append(letterbox_images([rgb.flip(0) if encoding.startswith("bgr") else rgb],
                                            config.input_size)[0])
    return normalize_images(torch.cat(letterboxed), *channel_statistics(config))


def inputs_digest(inputs: torch.Tensor) -> str:
    """sha256 of the calibration inputs' shape and bytes (the calibration set's identity in cache keys)."""
    digest = hashlib.sha256(f"{tuple(inputs.shape)}|{inputs.dtype}|".encode())
    digest.update(inputs.contiguous().numpy().tobytes())
    return digest.hexdigest()


def calibration_inputs(source: str, config: ModelConfig, count: int = DEFAULT_FRAMES) -> tuple[torch.Tensor, str]:
    """(N,3,H,W) float32 network inputs from ``source`` and their digest."""
    frames, encodings = calibration_frames(source, count)
    if not frames:
        raise CalibrationSourceError(f"calibration source '{source}' gave no frames")
    inputs = network_inputs(frames, encodings, config)
    return inputs, inputs_digest(inputs)
