"""Sinks on their own: the conformance suite, policies, validation, statistics."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest

import callstream
from callstream import BoundedSink, DequeSink, Event, QueueSink
from callstream.sinks import Cancelled
from callstream.testing import check_sink
from tests.helpers import Counter, make, run, wait_until


@pytest.mark.parametrize(
    "make_sink",
    [QueueSink, DequeSink, BoundedSink, lambda: BoundedSink(4096, "drop_oldest"), lambda: BoundedSink(512, "error")],
    ids=["queue", "deque", "bounded", "drop_oldest", "error"],
)
def test_builtin_sinks_pass_conformance(make_sink: Any) -> None:
    check_sink(make_sink)


def test_check_sink_catches_a_broken_sink() -> None:
    class LosesFirst:
        def __init__(self) -> None:
            self.inner = DequeSink()
            self.seen = False

        def put(self, item: Any) -> None:
            if not self.seen:
                self.seen = True
                return
            self.inner.put(item)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    with pytest.raises(AssertionError, match="items put"):
        check_sink(LosesFirst)


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (("10",), TypeError, "maxsize must be an int"),
        ((True,), TypeError, "maxsize must be an int"),
        ((-1,), ValueError, ">= 0"),
        ((8, "ring"), ValueError, "'block', 'drop_oldest', 'drop_newest', 'coalesce', 'error'"),
        ((0, "drop_oldest"), ValueError, "rendezvous"),
    ],
)
def test_bounded_validation(args: tuple[Any, ...], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        BoundedSink(*args)


def tok(text: str, run: str = "r1") -> Event:
    return Event("token", name="m", run_id=run, text=text, data={"chunk": text})


def structural(kind: str = "llm_end") -> Event:
    return Event(kind, name="m", run_id="r1")  # type: ignore[arg-type]


def drain(sink: Any) -> list[Any]:
    out: list[Any] = []
    while batch := sink.take(0):
        while batch:
            out.append(batch.popleft())
    return out


def test_drop_newest_keeps_structure() -> None:
    s = BoundedSink(2, "drop_newest")
    start, end = structural("llm_start"), structural("llm_end")
    for item in [start, "a", "b", "c", end]:
        s.put(item)
    assert drain(s) == [start, "a", end]
    assert s.statistics().dropped == 2


def test_drop_oldest_drops_oldest_token_only() -> None:
    s = BoundedSink(2, "drop_oldest")
    start, end = structural("llm_start"), structural("llm_end")
    for item in [start, "a", "b", "c", end]:
        s.put(item)
    got = drain(s)
    assert got[0] is start and got[-1] is end
    assert [x for x in got if isinstance(x, str)] == ["c"]
    assert s.statistics().dropped == 2


def test_coalesce_keeps_all_text_in_bounded_memory() -> None:
    s = BoundedSink(3, "coalesce")
    start = structural("llm_start")
    s.put(start)
    for ch in "hello world":
        s.put(ch)
    assert s.statistics().buffered <= 3
    got = drain(s)
    assert got[0] is start
    assert "".join(got[1:]) == "hello world"
    assert s.statistics().coalesced > 0


def test_coalesce_merges_token_events_of_same_run_only() -> None:
    s = BoundedSink(2, "coalesce")
    s.put(tok("a", "r1"))
    s.put(tok("b", "r2"))
    s.put(tok("c", "r2"))  # merges into b (same run, adjacent)
    got = drain(s)
    assert [(e.run_id, e.text) for e in got] == [("r1", "a"), ("r2", "bc")]


def test_error_policy_raises_overflow_in_producer(face: str) -> None:
    counter = Counter(100)
    stream = make(face, counter, sink=BoundedSink(4, "error"))
    got: list[Any] = []

    def body(item: Any) -> None:
        got.append(item)
        if len(got) == 1:
            assert counter.finished.wait(2)  # the producer overflowed meanwhile

    with pytest.raises(callstream.StreamOverflow):
        run(face, stream, body)
    # F25: everything buffered before the overflow is delivered first
    assert got == [f"t{i}" for i in range(len(got))]
    assert 4 <= len(got) <= 6


def test_rendezvous_producer_lead_at_most_one() -> None:
    # F26: BoundedSink(0): the producer is never more than one item ahead.
    produced = [0]

    def producer(emit: Any) -> None:
        for i in range(200):
            produced[0] = i + 1
            emit(i)

    with callstream.from_callback(producer, sink=BoundedSink(0)) as s:
        for consumed, _ in enumerate(s, 1):
            assert produced[0] - consumed <= 1


@pytest.mark.parametrize("maxsize", [1, 8])
def test_block_policy_bounds_producer_lead(maxsize: int) -> None:
    produced = [0]

    def producer(emit: Any) -> None:
        for i in range(300):
            emit(i)
            produced[0] = i + 1

    with callstream.from_callback(producer, sink=BoundedSink(maxsize)) as s:
        for consumed, _ in enumerate(s, 1):
            assert produced[0] - consumed <= maxsize + 1


def test_statistics_show_parked_producer_and_close_releases() -> None:
    s = BoundedSink(1)
    s.put("a")
    released = threading.Event()

    def producer() -> None:
        try:
            s.put("b")
        except Cancelled:
            released.set()

    t = threading.Thread(target=producer)
    t.start()
    wait_until(lambda: s.statistics().producers_waiting == 1, what="producer parked")
    assert "producers waiting: 1" in repr(s)
    s.close()
    assert released.wait(2)
    t.join(2)
    stats = s.statistics()
    assert stats.closed and stats.buffered == 0 and stats.producers_waiting == 0


@pytest.mark.parametrize("sink_type", [QueueSink, DequeSink, BoundedSink])
def test_take_timeout_is_respected(sink_type: Any) -> None:
    s = sink_type()
    t0 = time.monotonic()
    assert not s.take(0.05)
    assert 0.04 <= time.monotonic() - t0 < 1


@pytest.mark.parametrize("sink_type", [QueueSink, DequeSink, BoundedSink])
def test_peak_statistics(sink_type: Any) -> None:
    s = sink_type()
    for i in range(5):
        s.put(i)
    assert len(drain(s)) == 5
    assert s.statistics().peak == 5


@pytest.mark.parametrize("face", ["sync", "async"])
def test_deque_sink_without_the_gil_puts_under_its_lock(monkeypatch: pytest.MonkeyPatch, face: str) -> None:
    # Issue 16: on a free-threaded build (`sys._is_gil_enabled()` false) the lock-free put could
    # lose a wake-up; the locking put is forced here, where the GIL is on.
    monkeypatch.setattr(callstream.sinks, "GIL", False)
    sink = DequeSink()
    assert sink._gil is False  # each put of this sink takes the locking path
    check_sink(DequeSink)  # every conformance check, on the locking path
    n = 20_000

    def producer(emit: Any) -> None:
        for i in range(n):
            emit(i)

    stream = (callstream.from_callback if face == "sync" else callstream.afrom_callback)(producer, sink=DequeSink())
    assert run(face, stream) == list(range(n))


def test_deque_sink_with_the_gil_keeps_its_lock_free_put() -> None:
    sink = DequeSink()
    assert callstream.sinks.GIL is getattr(sys, "_is_gil_enabled", lambda: True)()
    if callstream.sinks.GIL:
        assert sink.put != sink._locked_put
