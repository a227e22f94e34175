"""Unlabeled camera frames for distillation and self-training: image folders, videos and rosbag2 files, streamed.

A source is a folder of images (sorted by path, recursively), a video file (OpenCV), or a rosbag2 recording (a bag
folder with ``metadata.yaml``, or a single ``.db3``/``.mcap`` file), read with ``rosbags`` message by message,
never copied. Bag topics may carry ``sensor_msgs/msg/Image`` (encodings: ``hybridnets_ros.encodings.ENCODINGS``) or
``sensor_msgs/msg/CompressedImage`` (anything ``cv2.imdecode`` reads); ``topic`` picks one, and may be left out when
a bag has exactly one image topic. Several sources are read one after the other, in the order given.

Frames are thinned at the source (:class:`Subsample`): every N-th frame, or a minimum gap of recording time
between kept frames (bag and video time stamps; an image folder has none). Kept frames pass a seeded shuffle buffer,
so the order is random but the same for the same (seed, pass); payloads in the buffer stay encoded (CDR bytes or file
paths; video frames are decoded by OpenCV as they are read) and are decoded only when they leave it. A pass can
start after ``skip`` frames, which are not decoded: (pass, frames consumed) is the position a checkpoint stores to
resume the stream exactly.

This module does not import ROS: raw image payloads are converted by :mod:`hybridnets_ros.encodings` (numpy/OpenCV),
the same conversion the node applies to its rclpy messages.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import cv2
import numpy as np
import torch

from hybridnets_ros.conventions import IMAGE_SUFFIXES
from hybridnets_ros.encodings import ENCODINGS, ImageConversionError, raw_to_array, to_rgb8
from hybridnets_ros.inference.letterbox import Letterbox

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
BAG_FILE_SUFFIXES = (".db3", ".mcap")
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
DEFAULT_SHUFFLE_BUFFER = 64
NANOSECONDS = 1_000_000_000


class UnlabeledSourceError(ValueError):
    """A source that cannot be read; the message names it, says what is wrong and what to do."""


class Frame(NamedTuple):
    """One kept frame before decoding: where it came from, its recording time (ns, None if unknown) and payload.

    ``payload`` is a file path (image folder), an (H,W,3) uint8 RGB array (video) or CDR bytes (bag).
    """

    key: str
    stamp_ns: int | None
    payload: Any


@dataclass(frozen=True)
class Subsample:
    """Which frames to keep: every ``every``-th frame of a source and, when ``min_gap_s`` > 0, only frames at least
    that much recording time after the previous kept one."""

    every: int = 1
    min_gap_s: float = 0.0

    def __post_init__(self) -> None:
        if self.every < 1 or self.min_gap_s < 0:
            raise ValueError(f"--every must be >= 1 and --min-gap >= 0, got {self.every} and {self.min_gap_s}")

    def select(self, frames: Iterator[tuple[str, int | None, Callable[[], Any]]]) -> Iterator[Frame]:
        """Keep frames of one source: (key, stamp ns, payload getter) -> Frame; getters of dropped frames never run."""
        last_kept: int | None = None
        gap_ns = round(self.min_gap_s * NANOSECONDS)
        for index, (key, stamp, get_payload) in enumerate(frames):
            if index % self.every:
                continue
            if gap_ns:
                if stamp is None:
                    raise UnlabeledSourceError(
                        f"{key}: --min-gap needs frame time stamps and this source has none (an image folder); "
                        "subsample it with --every instead")
                if last_kept is not None and stamp - last_kept < gap_ns:
                    continue
                last_kept = stamp
            yield Frame(key, stamp, get_payload())


# --------------------------------------------------------------------------------------------- image folders
def _folder_frames(root: Path) -> Iterator[tuple[str, int | None, Callable[[], Any]]]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UnlabeledSourceError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder or below")
    for path in files:
        yield str(path), None, lambda path=path: path


def _decode_file(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UnlabeledSourceError(f"{path}: cannot decode the image; remove or replace the file")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------------------- videos
def _video_frames(path: Path) -> Iterator[tuple[str, int | None, Callable[[], Any]]]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UnlabeledSourceError(f"{path}: OpenCV cannot open this video; convert it to H.264 mp4 (ffmpeg)")
    try:
        index = 0
        while capture.grab():  # grab() demuxes without converting: dropped frames cost little
            stamp = round(capture.get(cv2.CAP_PROP_POS_MSEC) * 1e6)

            def retrieve(index: int = index) -> np.ndarray:
                ok, bgr = capture.retrieve()
                if not ok:
                    raise UnlabeledSourceError(f"{path}: frame {index} does not decode")
                return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

            yield f"{path}#{index}", stamp, retrieve
            index += 1
    finally:
        capture.release()


# ------------------------------------------------------------------------------------------------------ bags
def is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix.lower() in BAG_FILE_SUFFIXES


def _typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def bag_image_topic(path: Path, topic: str | None) -> tuple[str, str]:
    """(topic, message type) to read from the bag: ``topic`` checked, or its only image topic."""
    from rosbags.rosbag2 import Reader

    try:
        with Reader(path) as reader:
            types = {c.topic: c.msgtype for c in reader.connections}
    except Exception as err:  # rosbags raises its own error types for missing/corrupt metadata and storage
        raise UnlabeledSourceError(f"{path}: cannot open as a rosbag2 recording ({type(err).__name__}: {err})") from err
    images = sorted(t for t, m in types.items() if m in (IMAGE_TYPE, COMPRESSED_TYPE))
    if topic is None:
        if len(images) != 1:
            raise UnlabeledSourceError(
                f"{path}: {'no' if not images else len(images)} image topics ({', '.join(images) or 'none'}); "
                "choose one with --topic")
        topic = images[0]
    if topic not in types:
        raise UnlabeledSourceError(f"{path}: no topic '{topic}'; image topics here: {', '.join(images) or 'none'}")
    if types[topic] not in (IMAGE_TYPE, COMPRESSED_TYPE):
        raise UnlabeledSourceError(
            f"{path}: topic '{topic}' carries {types[topic]}, not {IMAGE_TYPE} or {COMPRESSED_TYPE}")
    return topic, types[topic]


def _bag_frames(path: Path, topic: str | None) -> Iterator[tuple[str, int | None, Callable[[], Any]]]:
    from rosbags.rosbag2 import Reader

    topic, msgtype = bag_image_topic(path, topic)
    with Reader(path) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        for index, (_, stamp, raw) in enumerate(reader.messages(connections=connections)):
            payload = (msgtype, bytes(raw))
            yield f"{path}:{topic}#{index}", int(stamp), lambda payload=payload: payload


def raw_image_to_rgb(encoding: str, height: int, width: int, step: int, big_endian: bool, data: np.ndarray,
                     where: str) -> np.ndarray:
    """A ``sensor_msgs/Image`` payload (``data``: 1-D uint8) -> (H,W,3) uint8 RGB; 16-bit samples keep their high
    byte. Raises UnlabeledSourceError naming ``where``."""
    if encoding not in ENCODINGS:
        raise UnlabeledSourceError(f"{where}: unsupported image encoding '{encoding}' (supported: "
                                   f"{', '.join(ENCODINGS)}); record a colour, mono, yuv or bayer stream")
    try:
        image = raw_to_array(height, width, step, encoding, big_endian, data)
    except ImageConversionError as exc:
        raise UnlabeledSourceError(f"{where}: {encoding} image {width}x{height} with step {step} does not match its "
                                   f"{len(data)} data bytes: {exc}") from exc
    return to_rgb8(image, ENCODINGS[encoding].decoded)


def _decode_bag_message(payload: tuple[str, bytes], key: str, store: Any) -> np.ndarray:
    msgtype, raw = payload
    msg = store.deserialize_cdr(raw, msgtype)
    if msgtype == COMPRESSED_TYPE:
        bgr = cv2.imdecode(np.frombuffer(msg.data.tobytes(), np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UnlabeledSourceError(f"{key}: compressed image (format '{msg.format}') does not decode")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return raw_image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data, key)


# ---------------------------------------------------------------------------------------------------- stream
def source_frames(path: str | Path, topic: str | None) -> Iterator[tuple[str, int | None, Callable[[], Any]]]:
    """Every frame of one source, in recording order: (key, stamp ns or None, payload getter)."""
    path = Path(path)
    if not path.exists():
        raise UnlabeledSourceError(f"{path}: no such file or folder (give an image folder, a video or a rosbag2)")
    if is_bag(path):
        return _bag_frames(path, topic)
    if path.is_dir():
        return _folder_frames(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _video_frames(path)
    raise UnlabeledSourceError(f"{path}: not an image folder, a video ({', '.join(VIDEO_SUFFIXES)}) or a rosbag2 "
                               f"(folder with metadata.yaml, {', '.join(BAG_FILE_SUFFIXES)})")


def shuffled(frames: Iterator[Frame], buffer_size: int, rng: np.random.Generator) -> Iterator[Frame]:
    """A streaming shuffle: each frame leaves from a random slot of a ``buffer_size`` buffer (1: unchanged order)."""
    buffer: list[Frame] = []
    for frame in frames:
        if len(buffer) < buffer_size:
            buffer.append(frame)
            continue
        slot = int(rng.integers(len(buffer)))
        yield buffer[slot]
        buffer[slot] = frame
    while buffer:
        yield buffer.pop(int(rng.integers(len(buffer))))


class UnlabeledStream:
    """Frames of one or more sources, thinned, shuffled per pass with ``seed`` and letterboxed to ``input_hw``.

    ``images(pass_index, skip)`` yields (3,H,W) uint8 RGB network-size tensors; the same arguments give the same
    frames in the same order, so (pass, frames consumed) resumes a stream.
    """

    def __init__(self, sources: Sequence[str | Path], input_hw: tuple[int, int], topic: str | None = None,
                 subsample: Subsample = Subsample(), seed: int = 0,
                 shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER) -> None:
        if not sources:
            raise UnlabeledSourceError("no unlabeled source given: pass image folders, videos or rosbag2 files")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle buffer must hold at least 1 frame, got {shuffle_buffer}")
        self.sources = [Path(s) for s in sources]
        self.input_hw = tuple(input_hw)
        self.topic = topic
        self.subsample = subsample
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        for source in self.sources:  # fail now, not in the middle of a run
            source_frames(source, topic)
            if is_bag(source):
                bag_image_topic(source, topic)

    def frames(self, pass_index: int = 0) -> Iterator[Frame]:
        """Kept, shuffled, undecoded frames of one pass over every source."""
        kept = (frame for source in self.sources for frame in self.subsample.select(source_frames(source, self.topic)))
        rng = np.random.default_rng((self.seed, pass_index))
        return shuffled(kept, self.shuffle_buffer, rng)

    def decode(self, frame: Frame, store: Any = None) -> np.ndarray:
        """(H,W,3) uint8 RGB of a frame at its recorded size."""
        if isinstance(frame.payload, np.ndarray):
            return frame.payload
        if isinstance(frame.payload, Path):
            return _decode_file(frame.payload)
        return _decode_bag_message(frame.payload, frame.key, store or _typestore())

    def images(self, pass_index: int = 0, skip: int = 0) -> Iterator[torch.Tensor]:
        """Letterboxed (3,H,W) uint8 RGB frames of one pass, after ``skip`` frames (not decoded)."""
        store = _typestore()
        for position, frame in enumerate(self.frames(pass_index)):
            if position < skip:
                continue
            rgb = self.decode(frame, store)
            letterbox = Letterbox.fit(rgb.shape[:2], self.input_hw)
            yield letterbox.image(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))

    def batches(self, batch_size: int, start: tuple[int, int] = (0, 0)) -> Iterator[tuple[torch.Tensor, int, int]]:
        """Endless (B,3,H,W) uint8 batches with the position after each: (images, pass, frames consumed in pass).

        A pass's last, short batch is dropped; ``start`` is a position returned earlier (resume).
        """
        pass_index, consumed = start
        while True:
            pending: list[torch.Tensor] = []
            produced = 0
            for image in self.images(pass_index, consumed):
                pending.append(image)
                produced += 1
                if len(pending) == batch_size:
                    consumed += batch_size
                    yield torch.stack(pending), pass_index, consumed
                    pending = []
            if produced == 0 and consumed == 0:
                raise UnlabeledSourceError(
                    f"{', '.join(map(str, self.sources))}: no frame left after subsampling ({self.subsample})")
            if consumed == 0 and produced < batch_size:
                raise UnlabeledSourceError(
                    f"{', '.join(map(str, self.sources))}: only {produced} frames per pass, fewer than the batch size "
                    f"{batch_size}; lower --every/--min-gap or the batch size")
            pass_index, consumed = pass_index + 1, 0


def add_unlabeled_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """``--unlabeled``, ``--topic``, ``--every``, ``--min-gap``: the unlabeled-source options of every CLI."""
    group = parser.add_argument_group("unlabeled frames")
    group.add_argument("--unlabeled", nargs="+", required=required, metavar="SRC",
                       help="image folders, videos or rosbag2 recordings (folder with metadata.yaml, .db3, .mcap), "
                            "read in this order")
    group.add_argument("--topic", help="image topic of the bags (sensor_msgs/Image or CompressedImage); "
                                       "default: the bag's only image topic")
    group.add_argument("--every", type=int, default=1, help="keep every N-th frame of each source")
    group.add_argument("--min-gap", type=float, default=0.0,
                       help="keep frames at least this many seconds of recording time apart (bags, videos)")


def stream_from_options(options: Any, input_hw: tuple[int, int]) -> UnlabeledStream:
    """The stream that options with ``unlabeled``, ``topic``, ``every``, ``min_gap`` and ``seed`` describe."""
    return UnlabeledStream(options.unlabeled, input_hw, topic=options.topic,
                           subsample=Subsample(options.every, options.min_gap), seed=options.seed)
