"""The core's rules, sans-I/O: the one reading of the three time limits."""

from __future__ import annotations

from typing import Any

import pytest

import callstream
from callstream._core import Timeouts, _Core
from callstream.sinks import DequeSink


def core(total: float | None = None, first: float | None = None, idle: float | None = None) -> _Core[Any]:
    c: _Core[Any] = _Core(lambda emit: None, "queue", Timeouts(total, first, idle))
    c.t_start = c.last_event_t = 100.0
    return c


def test_deadline_is_the_nearest_limit_and_the_time_left() -> None:
    c = core(total=10, first=3, idle=5)
    assert c._deadline(101) == ("first_token_timeout", 2)
    c.first_token_t = 101.5  # the first token came: that limit no longer applies
    c.last_event_t = 101.5
    assert c._deadline(102) == ("idle_timeout", 4.5)
    c.last_event_t = 109
    assert c._deadline(109) == ("timeout", 1)


def test_of_several_passed_limits_the_whole_streams_wins_then_the_first_tokens() -> None:
    assert core(total=1, first=2, idle=1)._deadline(200) == ("timeout", -99)
    assert core(first=2, idle=1)._deadline(200) == ("first_token_timeout", -98)
    assert core(idle=1)._deadline(200) == ("idle_timeout", -99)


def test_no_deadline_once_only_a_first_token_limit_was_met() -> None:
    c = core(first=3)
    c.first_token_t = 101
    assert c._deadline(1000) is None
    assert c.enforce_deadlines() is None


def test_a_steady_producer_still_hits_the_total_limit() -> None:
    # The producer re-reads the deadlines only once the nearest may have passed
    # (the idle one moves with every item): the total limit still stops it.
    def steady(emit: Any) -> None:
        while True:
            emit("x")

    with pytest.raises(callstream.StreamTimeout) as info:
        with callstream.from_callback(steady, sink="deque", timeout=0.2, idle_timeout=0.1) as s:
            for _ in s:
                pass
    assert info.value.limit == "timeout"


class _Recording:
    """A deque sink recording, at `finish`, whether the worker was already done."""

    def __init__(self) -> None:
        self.core: Any = None
        self.done_at_finish: list[bool] = []
        inner = DequeSink()
        self.put, self.take, self.set_wakeup = inner.put, inner.take, inner.set_wakeup
        self.close, self.statistics, self._finish = inner.close, inner.statistics, inner.finish

    def finish(self) -> None:
        self.done_at_finish.append(self.core.worker_done)
        self._finish()


def test_the_worker_is_done_before_the_sink_wakes_the_consumer() -> None:
    # A consumer woken by `finish` that found the worker not done yet would arm a
    # wake-up no one fires any more: with no safety timer, a hang (seen under load).
    sink = _Recording()
    stream = callstream.from_callback(lambda emit: emit("x"), sink=sink)
    sink.core = stream._core
    with stream:
        assert list(stream) == ["x"]
    assert sink.done_at_finish == [True]


def test_a_push_stream_is_done_before_its_sink_wakes_the_consumer() -> None:
    pushed: list[Any] = []
    sink = _Recording()
    stream = callstream.from_push(pushed.append, sink=sink)
    sink.core = stream._core
    with stream:
        pushed[0].emit("x")
        pushed[0].finish()
        assert list(stream) == ["x"]
    assert sink.done_at_finish == [True]
