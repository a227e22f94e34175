"""Keep-newest slots and batching of the node (pure Python, threads, no ROS graph)."""
from __future__ import annotations

import threading
import time

import numpy as np

from hybridnets_ros.ros.frame_buffer import Frame, FrameBuffer

NOW_NS = 10_000_000_000


def _frame(camera: str, stamp_ns: int = NOW_NS, tag: int = 0) -> Frame:
    return Frame(camera, np.full((2, 2, 3), tag, np.uint8), "bgr8", header=tag, stamp_ns=stamp_ns)


def _now() -> int:
    return NOW_NS


def test_newest_frame_wins_and_the_replaced_one_is_returned() -> None:
    buffer = FrameBuffer(["a"])
    assert buffer.put(_frame("a", tag=1)) is None
    replaced = buffer.put(_frame("a", tag=2))
    assert replaced is not None and replaced.header == 1
    batch = buffer.next_batch(0.0, 0, _now)
    assert [f.header for f in batch.frames] == [2]


def test_slot_is_empty_after_a_batch_took_it() -> None:
    buffer = FrameBuffer(["a"])
    buffer.put(_frame("a", tag=1))
    buffer.next_batch(0.0, 0, _now)
    assert buffer.put(_frame("a", tag=2)) is None  # nothing was pending, so nothing counts as dropped


def test_batch_holds_every_camera_in_camera_order() -> None:
    buffer = FrameBuffer(["front", "rear"])
    buffer.put(_frame("rear", tag=2))
    buffer.put(_frame("front", tag=1))
    batch = buffer.next_batch(5.0, 0, _now)  # both present: no waiting for the full 5 s
    assert [f.camera for f in batch.frames] == ["front", "rear"]


def test_batch_waits_for_the_other_camera_then_takes_both() -> None:
    buffer = FrameBuffer(["front", "rear"])
    buffer.put(_frame("front", tag=1))
    late = threading.Timer(0.05, lambda: buffer.put(_frame("rear", tag=2)))
    late.start()
    batch = buffer.next_batch(30.0, 0, _now)
    late.join()
    assert [f.camera for f in batch.frames] == ["front", "rear"]


def test_batch_gives_up_waiting_for_a_silent_camera() -> None:
    buffer = FrameBuffer(["front", "rear"])
    buffer.put(_frame("front", tag=1))
    batch = buffer.next_batch(0.02, 0, _now)
    assert [f.camera for f in batch.frames] == ["front"]


def test_wait_counts_from_the_oldest_pending_frame() -> None:
    buffer = FrameBuffer(["front", "rear"])
    old = _frame("front")
    old.received = time.monotonic() - 100.0  # arrived long ago (the worker was busy): no further waiting
    buffer.put(old)
    batch = buffer.next_batch(30.0, 0, _now)
    assert [f.camera for f in batch.frames] == ["front"]


def test_frames_older_than_the_age_limit_are_stale() -> None:
    buffer = FrameBuffer(["a", "b", "c"])
    buffer.put(_frame("a", stamp_ns=NOW_NS - 50_000_000))  # 50 ms old
    buffer.put(_frame("b", stamp_ns=NOW_NS - 500_000_000))  # 500 ms old
    buffer.put(_frame("c", stamp_ns=0))  # unstamped: its age is unknown, never dropped
    batch = buffer.next_batch(0.0, 100_000_000, _now)
    assert [f.camera for f in batch.frames] == ["a", "c"]
    assert [f.camera for f in batch.stale] == ["b"]


def test_no_age_limit_keeps_old_frames() -> None:
    buffer = FrameBuffer(["a"])
    buffer.put(_frame("a", stamp_ns=1))
    batch = buffer.next_batch(0.0, 0, _now)
    assert len(batch.frames) == 1 and not batch.stale


def test_close_releases_a_waiting_worker() -> None:
    buffer = FrameBuffer(["a"])
    result = []
    worker = threading.Thread(target=lambda: result.append(buffer.next_batch(0.0, 0, _now)))
    worker.start()
    buffer.close()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert result[0].frames == [] and buffer.closed


def test_many_producers_never_queue_more_than_one_frame_per_camera() -> None:
    buffer = FrameBuffer(["a", "b"])
    replaced = []

    def produce(camera: str) -> None:
        for i in range(200):
            if buffer.put(_frame(camera, tag=i)) is not None:
                replaced.append(camera)

    producers = [threading.Thread(target=produce, args=(c,)) for c in ("a", "b")]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    batch = buffer.next_batch(0.0, 0, _now)
    assert len(batch.frames) == 2 and len(replaced) == 2 * 199
    assert all(f.header == 199 for f in batch.frames)
