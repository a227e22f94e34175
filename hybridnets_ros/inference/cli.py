"""``hybridnets-infer``: run HybridNets on an image, a folder of images or a video, and write the results.

Per frame ``<name>.json`` (boxes in original pixels, scores, class names, image size), ``<name>_seg.png`` (mono8
class IDs at the original size: 0 background, k = k-th seg class) and ``<name>_overlay.jpg``. Video frames are
named ``<stem>_<frame index, 6 digits>``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from hybridnets_ros.cli_support import configure_logging, run_command
from hybridnets_ros.conventions import IMAGE_SUFFIXES, DetectionThresholds
from hybridnets_ros.inference.backends import add_backend_arguments
from hybridnets_ros.inference.pipeline import HybridNetsPipeline
from hybridnets_ros.inference.postprocess import FrameResult
from hybridnets_ros.inference.visualize import draw_overlay
from hybridnets_ros.model.checkpoint import CheckpointError

LOG = logging.getLogger("hybridnets-infer")

# Progress bars only for inputs long enough to be worth one.
MIN_FRAMES_FOR_PROGRESS = 10


class SourceError(RuntimeError):
    """The --source cannot be read."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridnets-infer",
        description="Detect vehicles and segment drivable area and lane lines in images or a video.",
    )
    parser.add_argument("--weights", default=None, help="checkpoint (.pt); default: the bundled synthetic-scene model")
    parser.add_argument("--source", required=True, help="an image, a folder of images, or a video file")
    parser.add_argument("--output", required=True, help="folder for the per-frame .json, _seg.png and _overlay.jpg")
    parser.add_argument("--model-config", default=None,
                        help="model config name in models/ or a .yaml path (default: the checkpoint's own)")
    parser.add_argument("--score-threshold", type=float, default=DetectionThresholds.score_threshold)
    parser.add_argument("--nms-iou-threshold", type=float, default=DetectionThresholds.nms_iou_threshold)
    add_backend_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=1, help="frames per forward pass")
    return parser


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"cannot read image '{path}': not an image file, or corrupt")
    return image


def _image_frames(paths: Sequence[Path]) -> Iterator[tuple[str, np.ndarray]]:
    for path in paths:
        yield path.stem, _read_image(path)


def _video_frames(path: Path, capture: cv2.VideoCapture) -> Iterator[tuple[str, np.ndarray]]:
    index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield f"{path.stem}_{index:06d}", frame
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise SourceError(f"video '{path}' has no readable frames")


def open_source(source: str | Path) -> tuple[Iterator[tuple[str, np.ndarray]], int | None]:
    """(iterator of (name, BGR frame), frame count or None when unknown) for an image, folder or video."""
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(f"source '{path}' does not exist")
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SourceError(f"folder '{path}' contains no images ({', '.join(IMAGE_SUFFIXES)})")
        stems = [p.stem for p in images]
        if len(set(stems)) != len(stems):
            raise SourceError(f"folder '{path}' has several images with the same name stem; their outputs would clash")
        return _image_frames(images), len(images)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        _read_image(path)  # fail now, with a clear message, rather than mid-run
        return _image_frames([path]), 1
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(
            f"cannot open '{path}': not an image ({', '.join(IMAGE_SUFFIXES)}) and not a video OpenCV "
            "can decode"
        )
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    return _video_frames(path, capture), count if count > 0 else None


def _batches(frames: Iterator[tuple[str, np.ndarray]], size: int) -> Iterator[list[tuple[str, np.ndarray]]]:
    batch: list[tuple[str, np.ndarray]] = []
    for item in frames:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_result(
    output: Path, name: str, frame_bgr: np.ndarray, result: FrameResult, class_names: Sequence[str],
    seg_names: Sequence[str],
) -> None:
    """Write ``<name>.json``, ``<name>_seg.png`` and ``<name>_overlay.jpg`` into ``output``."""
    det = result.detections
    record = {
        "boxes": det.boxes.tolist(),
        "scores": det.scores.tolist(),
        "classes": [class_names[int(c)] for c in det.class_ids],
        "image_size": [int(frame_bgr.shape[0]), int(frame_bgr.shape[1])],
    }
    (output / f"{name}.json").write_text(json.dumps(record), encoding="utf-8")
    overlay = draw_overlay(frame_bgr, result, class_names, seg_names)
    for suffix, image in (("_seg.png", result.seg_mask), ("_overlay.jpg", overlay)):
        target = output / f"{name}{suffix}"
        if not cv2.imwrite(str(target), image):
            raise OSError(f"cannot write '{target}'")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit codes as :mod:`hybridnets_ros.cli_support` says (an unreadable --source or --weights is bad
    input, 2; an output that cannot be written is a failure, 1)."""
    args = build_parser().parse_args(argv)
    configure_logging()
    return run_command("hybridnets-infer", lambda: infer(args), bad_input=(SourceError, CheckpointError))


def infer(args: argparse.Namespace) -> None:
    """Run the parsed command line: every frame of --source through the model, results into --output."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    postprocess = DetectionThresholds(score_threshold=args.score_threshold, nms_iou_threshold=args.nms_iou_threshold)
    postprocess.validate()
    frames, total = open_source(args.source)
    pipeline = HybridNetsPipeline.from_weights(
        args.weights, model_config=args.model_config, device=args.device, precision=args.precision,
        backend=args.backend, postprocess=postprocess,
        **({"calibration": args.calibration} if args.precision == "int8" else {}),
    )
    output = Path(args.output).expanduser()
    output.mkdir(parents=True, exist_ok=True)
    show_progress = sys.stderr.isatty() and (total is None or total >= MIN_FRAMES_FOR_PROGRESS)
    done = 0
    with tqdm(total=total, unit="frame", disable=not show_progress) as progress:
        for batch in _batches(frames, args.batch_size):
            results = pipeline([frame for _, frame in batch], "bgr8")
            for (name, frame), result in zip(batch, results):
                write_result(output, name, frame, result, pipeline.class_names, pipeline.seg_names)
            done += len(batch)
            progress.update(len(batch))
    LOG.info("wrote results for %d frame(s) to %s", done, output)


if __name__ == "__main__":
    sys.exit(main())
