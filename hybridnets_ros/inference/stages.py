"""Run a chain of stages on a stream of batches, either one batch at a time or overlapped (one thread per stage).

Overlapped, stage k of batch n runs while stage k+1 works on batch n-1, so throughput approaches 1 / (slowest
stage) instead of 1 / (sum of stages). Stages hand over through slots holding one item, so at most one batch waits
between two stages, and the source is asked for a new batch only when the first slot is empty: whatever it returns
is as fresh as it can be (a frame buffer keeps replacing older frames until then). Each stage is one thread and each
slot is first in, first out, so batches leave in the order they came.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

Stage = Callable[[Any], Any]


class Slot:
    """A hand-over place for one item between two threads; ``close`` lets the taker drain it and stop."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False

    def put(self, item: Any) -> bool:
        """Wait until the slot is empty, then fill it; False (item dropped) when it was closed meanwhile."""
        with self._cond:
            self._cond.wait_for(lambda: not self._full or self._closed)
            if self._closed:
                return False
            self._item, self._full = item, True
            self._cond.notify_all()
            return True

    def wait_empty(self) -> bool:
        """Wait until the slot is empty; False when it is closed."""
        with self._cond:
            self._cond.wait_for(lambda: not self._full or self._closed)
            return not self._closed

    def take(self) -> tuple[bool, Any]:
        """``(True, item)`` once there is one; ``(False, None)`` when the slot is closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed)
            if not self._full:
                return False, None
            item, self._item, self._full = self._item, None, False
            self._cond.notify_all()
            return True, item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class StageRunner:
    """Feeds ``source()`` results through ``stages`` until ``stopped()``.

    ``source()`` returns the next input or None (nothing this time; it should block briefly itself, e.g. wait for
    frames, and return None when stopping). Each stage maps its input to the next stage's input; a stage returning
    None ends that batch there (it has already reported why). The last stage's result is discarded. Stages must
    catch their own errors: an exception ends the runner's thread it was raised in.

    ``overlapped=False`` runs everything in one thread, batch after batch; ``True`` gives each stage its own thread.
    ``join`` waits until the source has stopped and every batch already taken has gone through.
    """

    def __init__(self, source: Callable[[], Any], stages: Sequence[Stage], stopped: Callable[[], bool],
                 overlapped: bool, name: str = "stages") -> None:
        if not stages:
            raise ValueError("StageRunner needs at least one stage")
        self._source = source
        self._stages = list(stages)
        self._stopped = stopped
        self.overlapped = overlapped
        count = len(self._stages) if overlapped else 1
        self._slots = [Slot() for _ in range(count - 1)]
        self._threads = [threading.Thread(target=self._feed, name=f"{name}-0", daemon=True)]
        self._threads += [threading.Thread(target=self._relay, args=(k,), name=f"{name}-{k}", daemon=True)
                          for k in range(1, count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _run(self, item: Any, stages: Sequence[Stage]) -> Any:
        for stage in stages:
            if item is None:
                return None
            item = stage(item)
        return item

    def _feed(self) -> None:
        """Thread 0: source and stage 0 (all stages when not overlapped)."""
        own = self._stages if not self.overlapped else self._stages[:1]
        try:
            while not self._stopped():
                if self._slots and not self._slots[0].wait_empty():
                    return  # the next stage's thread ended
                item = self._source()
                if item is None:
                    continue
                item = self._run(item, own)
                if self._slots and item is not None and not self._slots[0].put(item):
                    return
        finally:
            if self._slots:
                self._slots[0].close()

    def _relay(self, k: int) -> None:
        """Thread k: stage k between slot k-1 and slot k."""
        try:
            while True:
                ok, item = self._slots[k - 1].take()
                if not ok:
                    return
                item = self._stages[k](item)
                if k < len(self._slots) and item is not None and not self._slots[k].put(item):
                    return
        finally:
            # Closing the input too unblocks the threads before this one should this one end early (a stage raised).
            self._slots[k - 1].close()
            if k < len(self._slots):
                self._slots[k].close()
