"""StageRunner: order, overlap, bounded hand-overs, fresh inputs, dropped batches and early ends."""
from __future__ import annotations

import threading
import time

import pytest

from hybridnets_ros.inference.stages import StageRunner


class Feed:
    """A source of 0..n-1 that then reports stopped; records how many items are in flight at most."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.next = 0
        self.done: list[int] = []
        self.lock = threading.Lock()
        self.max_in_flight = 0
        self.finished = threading.Event()

    def source(self):
        with self.lock:
            if self.next >= self.n:
                self.finished.set()
                return None
            self.next += 1
            self.max_in_flight = max(self.max_in_flight, self.next - len(self.done))
            return self.next - 1

    def stopped(self) -> bool:
        return self.finished.is_set()

    def sink(self, item):
        with self.lock:
            self.done.append(item)


def _run(feed: Feed, stages, overlapped: bool) -> None:
    runner = StageRunner(feed.source, stages, feed.stopped, overlapped)
    runner.start()
    runner.join(timeout=30)
    assert not any(t.is_alive() for t in runner._threads), "the runner did not finish"


@pytest.mark.parametrize("overlapped", [False, True])
def test_every_batch_goes_through_every_stage_in_order(overlapped):
    feed = Feed(20)
    _run(feed, [lambda x: ("pre", x), lambda x: (*x, "fwd"), lambda x: feed.sink(x)], overlapped)
    assert feed.done == [("pre", i, "fwd") for i in range(20)]


@pytest.mark.parametrize("overlapped", [False, True])
def test_stages_overlap_only_when_asked(overlapped):
    """The forward of batch 0 waits to see the preparation of batch 1: possible only with a thread per stage."""
    prepared_1 = threading.Event()
    seen = []

    def prepare(x):
        if x == 1:
            prepared_1.set()
        return x

    def forward(x):
        if x == 0:
            seen.append(prepared_1.wait(timeout=5.0 if overlapped else 0.3))
        return x

    feed = Feed(3)
    _run(feed, [prepare, forward, feed.sink], overlapped)
    assert seen == [overlapped] and feed.done == [0, 1, 2]


def test_hand_overs_hold_one_batch_and_the_source_waits_for_room():
    """A slow last stage: the source is not asked while the first slot is full, so at most one batch per stage and
    one per slot are in flight (the rest stay in the source, where a frame buffer can still replace them)."""
    feed = Feed(12)
    _run(feed, [lambda x: x, lambda x: x, lambda x: (time.sleep(0.02), feed.sink(x))], overlapped=True)
    assert feed.done == list(range(12))
    assert feed.max_in_flight <= 5


@pytest.mark.parametrize("overlapped", [False, True])
def test_a_stage_returning_none_drops_only_that_batch(overlapped):
    feed = Feed(6)
    _run(feed, [lambda x: None if x % 2 else x, lambda x: x, feed.sink], overlapped)
    assert feed.done == [0, 2, 4]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_stage_that_raises_ends_the_runner_without_hanging():
    feed = Feed(1000)

    def forward(x):
        if x == 3:
            raise RuntimeError("boom (expected by the test)")
        return x

    _run(feed, [lambda x: x, forward, feed.sink], overlapped=True)
    assert feed.done == [0, 1, 2]
