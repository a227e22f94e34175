"""HybridNets inference on camera frames: upload, letterbox, normalise, forward, post-process.

Frames are uint8 numpy arrays of any size in one of the ROS encodings; results are in original image pixels.
Each frame is copied to the device once; colour conversion, resizing and normalisation happen there. What the
network takes and how its raw heads (from any backend) become detections and class maps is the
:class:`~hybridnets_ros.inference.predictor.HybridNetsPredictor`'s; this module adds frames, letterboxes and stages.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from hybridnets_ros.conventions import DetectionThresholds
from hybridnets_ros.encodings import BGR_ORDERED, ENCODINGS, PIPELINE_ENCODINGS
from hybridnets_ros.inference.backends import create_backend, resolve_device
from hybridnets_ros.inference.backends.base import InferenceBackend
from hybridnets_ros.inference.letterbox import Letterbox, letterbox_images
from hybridnets_ros.inference.postprocess import (
    Detections,
    FrameResult,
    detections_to_orig,
    seg_confidences,
    segment,
)
from hybridnets_ros.inference.predictor import HybridNetsPredictor
from hybridnets_ros.model.checkpoint import build_model
from hybridnets_ros.model.config import ModelConfig, load_model_config
from hybridnets_ros.model.hybridnets import HybridNetsOutput
from hybridnets_ros.resources import resolve_weights

LOG = logging.getLogger(__name__)

__all__ = ["PIPELINE_ENCODINGS", "Detections", "FrameResult", "HybridNetsPipeline", "DetectionThresholds", "StagedBatch"]


def _check_frame(index: int, frame: np.ndarray, encoding: str) -> np.ndarray:
    """The frame as a contiguous (H,W,C) uint8 array, or ValueError saying what is wrong with it."""
    if encoding not in PIPELINE_ENCODINGS:
        raise ValueError(
            f"frame {index}: unsupported encoding '{encoding}', expected one of {sorted(PIPELINE_ENCODINGS)}")
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"frame {index}: expected a numpy array, got {type(frame).__name__}")
    channels = ENCODINGS[encoding].channels
    if frame.ndim == 2 and channels == 1:
        frame = frame[:, :, None]
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != channels:
        raise ValueError(
            f"frame {index}: encoding '{encoding}' needs a (H, W, {channels}) uint8 array, "
            f"got {frame.shape} {frame.dtype}"
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame {index}: empty image {frame.shape[:2]}")
    return np.ascontiguousarray(frame)


class HybridNetsPipeline:
    """Pre-processing, a backend and post-processing for one model.

    Safe to call from several threads (calls are serialised). ``postprocess`` (thresholds) may be changed between
    calls; each call uses the values current when it starts.
    """

    def __init__(
        self, backend: InferenceBackend, config: ModelConfig, postprocess: DetectionThresholds | None = None
    ) -> None:
        self.backend = backend
        self.config = config
        self.device = backend.device
        self.precision = backend.precision
        self.class_names = list(config.obj_list)
        self.seg_names = list(config.seg_list)
        self.predictor = HybridNetsPredictor(config, postprocess).to(self.device)
        self._lock = threading.Lock()
        self.last_timings: dict[str, float] = {}

    @property
    def postprocess(self) -> DetectionThresholds:
        """The detection thresholds of the next call: the predictor's own (change them, or assign new ones)."""
        return self.predictor.thresholds

    @postprocess.setter
    def postprocess(self, thresholds: DetectionThresholds) -> None:
        self.predictor.thresholds = thresholds

    @classmethod
    def from_weights(
        cls,
        weights: str | Path | None = None,
        model_config: str | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        backend: str = "auto",
        postprocess: DetectionThresholds | None = None,
        **backend_options: object,
    ) -> "HybridNetsPipeline":
        """Load a checkpoint (``None``: the bundled model) and build the pipeline on ``device``.

        ``backend`` and ``precision`` as for :func:`~hybridnets_ros.inference.backends.create_backend` (``auto``:
        the fastest installed backend, fp16 on CUDA and fp32 elsewhere; ``backend_options`` such as ``calibration``
        for int8 go to the backend).

        ``model_config`` (a name in ``models/`` or a yaml path) overrides the config embedded in the checkpoint;
        bare upstream state dicts default to the d3 BDD100K config. Raises WeightsFileError (a FileNotFoundError) when
        there is no readable weights file, and CheckpointError for unusable weight files.
        """
        path = resolve_weights(weights)
        config = load_model_config(model_config) if model_config else None
        torch_device = resolve_device(device)
        model, config = build_model(path, config, device="cpu")
        pipeline = cls(create_backend(backend, model, config, torch_device, precision, **backend_options), config,
                       postprocess)
        LOG.info(
            "loaded model '%s' (compound_coef %d, input %dx%d, classes %s, seg %s) from %s; backend %s on %s, %s (%s)",
            config.name, config.compound_coef, *config.input_size, list(config.obj_list), list(config.seg_list),
            path, pipeline.backend.name, torch_device, pipeline.precision, pipeline.backend.selection,
        )
        return pipeline

    def _to_device(self, frame: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(frame)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def preprocess(
        self, frames: Sequence[np.ndarray], encodings: Sequence[str] | str = "rgb8"
    ) -> tuple[torch.Tensor, list[Letterbox]]:
        """Frames (H,W,C) uint8 -> normalised network input (B,3,H,W) float32 on the device, and their letterboxes."""
        if isinstance(frames, np.ndarray) and frames.ndim < 4:
            raise TypeError("frames must be a sequence of images (e.g. a list); wrap a single image as [image]")
        if isinstance(encodings, str):
            encodings = [encodings] * len(frames)
        if len(encodings) != len(frames):
            raise ValueError(f"got {len(frames)} frames but {len(encodings)} encodings")
        colour = []
        for i, (frame, encoding) in enumerate(zip(frames, encodings)):
            # Views only: channels are dropped/repeated here and reordered after the (much smaller) letterbox.
            chw = self._to_device(_check_frame(i, frame, encoding)).permute(2, 0, 1)
            colour.append(chw.expand(3, -1, -1) if encoding == "mono8" else chw[:3])
        batch, letterboxes = letterbox_images(colour, self.config.input_size)
        bgr = [i for i, encoding in enumerate(encodings) if encoding in BGR_ORDERED]
        if bgr:
            index = torch.tensor(bgr, device=batch.device)
            batch[index] = batch[index].flip(1)
        return self.predictor.normalize(batch), letterboxes

    def forward(self, x: torch.Tensor) -> HybridNetsOutput:
        """Raw network outputs for a preprocessed batch."""
        return self.backend.forward(x)

    def postprocess_batch(
        self, out: HybridNetsOutput, letterboxes: Sequence[Letterbox], config: DetectionThresholds | None = None
    ) -> list[FrameResult]:
        """Raw outputs -> one FrameResult per frame, in original image pixels."""
        selected = self.predictor.detect(out.regression, out.classification, config)
        detections = detections_to_orig(selected, letterboxes)
        masks = segment(out.segmentation, self.predictor.seg_mode, letterboxes)
        confidences = seg_confidences(out.segmentation, self.predictor.seg_mode, letterboxes)
        return [FrameResult(*parts) for parts in zip(detections, masks, letterboxes, confidences)]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def prepare(self, frames: Sequence[np.ndarray], encodings: Sequence[str] | str = "rgb8") -> StagedBatch:
        """Stage 1: the thresholds current now and the preprocessed batch (see :meth:`preprocess`)."""
        with torch.inference_mode():
            config = dataclasses.replace(self.postprocess)
            start = time.perf_counter()
            x, letterboxes = self.preprocess(frames, encodings)
            self._sync()
            return StagedBatch(x, letterboxes, config, {"preprocess": (time.perf_counter() - start) * 1e3})

    def infer(self, batch: StagedBatch) -> StagedBatch:
        """Stage 2: the forward pass; the input is released, the raw outputs kept."""
        with torch.inference_mode():
            start = time.perf_counter()
            out = self.forward(batch.x)
            self._sync()
            batch.timings["forward"] = (time.perf_counter() - start) * 1e3
        return dataclasses.replace(batch, x=None, raw=out)

    def finish(self, batch: StagedBatch) -> list[FrameResult]:
        """Stage 3: post-processing with the thresholds captured by :meth:`prepare`."""
        with torch.inference_mode():
            start = time.perf_counter()
            results = self.postprocess_batch(batch.raw, batch.letterboxes, batch.config)
            batch.timings["postprocess"] = (time.perf_counter() - start) * 1e3
        return results

    def __call__(self, frames: Sequence[np.ndarray], encodings: Sequence[str] | str = "rgb8") -> list[FrameResult]:
        """Run the model on a batch of frames (any sizes); one FrameResult per frame, in order.

        The three stages in turn; a caller that overlaps batches calls :meth:`prepare`, :meth:`infer` and
        :meth:`finish` itself (each from one thread at a time).
        """
        if len(frames) == 0:
            return []
        with self._lock:
            batch = self.infer(self.prepare(frames, encodings))
            results = self.finish(batch)
            self.last_timings = batch.timings
        return results


@dataclasses.dataclass
class StagedBatch:
    """A batch between pipeline stages: the network input ``x`` (B,3,H,W) until the forward pass, then its ``raw``
    outputs; the letterboxes, the thresholds of the call and the stage times in ms so far."""

    x: torch.Tensor | None
    letterboxes: list[Letterbox]
    config: DetectionThresholds
    timings: dict[str, float]
    raw: HybridNetsOutput | None = None
