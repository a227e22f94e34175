"""Keep-newest-frame slots per camera, and batches drawn from them for one forward pass.

Subscription callbacks ``put`` frames; the inference thread takes batches with ``next_batch``. Nothing queues:
a camera's slot holds at most one unprocessed frame, so latency stays bounded however slow the model is, and a
frame replaced before it was taken is handed back to the caller to be counted as dropped.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np


@dataclass
class Frame:
    """One received image waiting for inference.

    ``image`` is (H, W, C) uint8 in ``encoding`` (a pipeline encoding), or None until ``decode`` (set by the
    subscription callback, which only does cheap checks) has run: it returns ``(image, encoding)`` or raises
    ``ImageConversionError``; decoding happens on the inference side (``HybridNetsNode._decode_frames``), never on
    the executor thread. ``stamp_ns`` is the header stamp in ns (0 = unstamped, never too old); ``received`` is
    ``time.monotonic()`` at arrival (for latency and batch waiting); ``header`` is the input header, copied to
    every output.
    """

    camera: str
    image: np.ndarray | None
    encoding: str
    header: Any
    stamp_ns: int
    received: float = field(default_factory=time.monotonic)
    decode: Callable[[], tuple[np.ndarray, str]] | None = None

    def decoded(self) -> "Frame":
        """This frame with its pixels: itself when already decoded, else a copy holding ``decode()``'s result
        (which may raise)."""
        if self.decode is None:
            return self
        image, encoding = self.decode()
        return dataclasses.replace(self, image=image, encoding=encoding, decode=None)


@dataclass
class Batch:
    """Frames to run together (camera order), the frames dropped as older than the age limit, and that limit (ns,
    0 = none) as it was when the frames were taken."""

    frames: list[Frame]
    stale: list[Frame]
    max_age_ns: int = 0


class FrameBuffer:
    """One slot per camera guarded by a condition variable; thread-safe."""

    def __init__(self, cameras: Sequence[str]) -> None:
        self._cameras = list(cameras)
        self._slots: dict[str, Frame | None] = {c: None for c in self._cameras}
        self._cond = threading.Condition()
        self._closed = False

    def put(self, frame: Frame) -> Frame | None:
        """Store ``frame`` as its camera's newest; return the unprocessed frame it replaced, if any."""
        with self._cond:
            replaced = self._slots[frame.camera]
            self._slots[frame.camera] = frame
            self._cond.notify_all()
        return replaced

    def close(self) -> None:
        """Wake and release every waiting ``next_batch`` (they return an empty batch) and discard pending frames."""
        with self._cond:
            self._closed = True
            self._slots = {c: None for c in self._cameras}
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def next_batch(self, max_wait_s: float, max_age_ns: int | Callable[[], int], now_ns: Callable[[], int]) -> Batch:
        """Block until at least one camera has a frame, then wait up to ``max_wait_s`` (counted from the arrival of
        the oldest pending frame) for the other cameras, and take every pending frame.

        Frames whose stamp is more than ``max_age_ns`` (0 = no limit) behind ``now_ns()`` (the node clock, so sim
        time works) go to ``Batch.stale``; a callable ``max_age_ns`` is read when the frames are taken, so a limit
        changed while this call waited applies to them. Returns an empty batch once closed.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._pending())
            deadline = min((f.received for f in self._pending()), default=0.0) + max_wait_s
            while not self._closed and len(self._pending()) < len(self._cameras):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._closed:
                return Batch([], [])
            taken = self._pending()
            self._slots = {c: None for c in self._cameras}
        return _split_stale(taken, max_age_ns() if callable(max_age_ns) else max_age_ns, now_ns())

    def _pending(self) -> list[Frame]:
        return [f for f in self._slots.values() if f is not None]


def _split_stale(frames: list[Frame], max_age_ns: int, now: int) -> Batch:
    if max_age_ns <= 0:
        return Batch(frames, [], 0)
    fresh, stale = [], []
    for frame in frames:
        too_old = frame.stamp_ns > 0 and now - frame.stamp_ns > max_age_ns
        (stale if too_old else fresh).append(frame)
    return Batch(fresh, stale, max_age_ns)
