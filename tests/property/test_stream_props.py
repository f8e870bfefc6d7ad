"""Properties of the bridge: exactly once, in order, identity kept, one outcome."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import callstream
from callstream.sinks import SinkName
from tests.conftest import SINKS, wait_for_no_workers
from tests.helpers import make, run
from tests.property.strategies import item_lists, items


@pytest.mark.parametrize("sink", SINKS)
@pytest.mark.parametrize("face", ["sync", "async"])
@settings(max_examples=1000)
@given(values=item_lists)
def test_any_items_round_trip_identically(face: str, sink: str, values: list[Any]) -> None:
    def producer(emit: Any) -> int:
        for v in values:
            emit(v)
        return len(values)

    stream = make(face, producer, sink=sink)
    got = run(face, stream)
    assert len(got) == len(values)
    assert all(a is b for a, b in zip(got, values))
    assert stream.output == len(values)


@pytest.mark.parametrize("sink", SINKS)
@pytest.mark.parametrize("face", ["sync", "async"])
@settings(max_examples=200)
@given(values=item_lists, data=st.data())
def test_error_after_any_prefix_delivers_exactly_that_prefix(
    face: str, sink: str, values: list[Any], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(values)), label="cut")
    error = RuntimeError("cut")

    def producer(emit: Any) -> None:
        for v in values[:cut]:
            emit(v)
        raise error

    got: list[Any] = []
    with pytest.raises(RuntimeError) as info:
        run(face, make(face, producer, sink=sink), got.append)
    assert info.value is error
    assert len(got) == cut and all(a is b for a, b in zip(got, values))


class StreamMachine(RuleBasedStateMachine):
    """Interleave emit / pull / close / producer error / return / timeout.

    The producer is driven step by step through a command queue; the model is
    the list of items it emitted. Invariants: what the consumer received is a
    prefix of what was emitted (no loss, duplicate or reordering), the stream
    always ends, with exactly one terminal outcome, and no thread is left.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cmds: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.ack = threading.Event()
        self.emitted: list[Any] = []
        self.received: list[Any] = []
        self.ended = False  # producer ended (returned or raised)
        self.outcome: Any = None  # consumer-side terminal outcome
        self.stream: Any = None
        self.deadline: float | None = None

    def _producer(self, emit: Any) -> Any:
        try:
            while True:
                cmd, arg = self.cmds.get(timeout=10)
                if cmd == "emit":
                    emit(arg)
                    self.emitted.append(arg)
                elif cmd == "raise":
                    raise arg
                elif cmd == "return":
                    return arg
                self.ack.set()
        finally:
            self.ended = True
            self.ack.set()

    @initialize(sink=st.sampled_from(SINKS), timed=st.booleans())
    def start(self, sink: SinkName, timed: bool) -> None:
        limit = 0.3 if timed else None
        self.stream = callstream.from_callback(self._producer, sink=sink, timeout=limit)
        self.stream.__enter__()
        self.deadline = time.monotonic() + limit if limit else None

    def _send(self, cmd: str, arg: Any = None) -> None:
        self.ack.clear()
        self.cmds.put((cmd, arg))
        assert self.ack.wait(5), "producer did not process the command"

    @precondition(lambda self: not self.ended)
    @rule(item=items)
    def emit(self, item: Any) -> None:
        self._send("emit", item)

    @precondition(lambda self: not self.ended)
    @rule()
    def producer_raises(self) -> None:
        self._send("raise", ValueError("machine"))

    @precondition(lambda self: not self.ended)
    @rule()
    def producer_returns(self) -> None:
        self._send("return", "ok")

    @precondition(lambda self: self.outcome is None)
    @rule()
    def close(self) -> None:
        self.stream.close()
        self.outcome = "closed"

    def _can_pull(self) -> bool:
        return self.outcome is None and (len(self.received) < len(self.emitted) or self.ended)

    @precondition(lambda self: self._can_pull())
    @rule()
    def pull(self) -> None:
        try:
            item = next(self.stream)
        except StopIteration:
            self.outcome = "end"
        except callstream.StreamTimeout as exc:
            assert self.deadline is not None and time.monotonic() >= self.deadline
            self.outcome = exc
        except ValueError as exc:
            assert str(exc) == "machine"
            self.outcome = exc
        else:
            self.received.append(item)

    @precondition(lambda self: self.deadline is not None and self.outcome is None)
    @rule()
    def wait_past_deadline(self) -> None:
        assert self.deadline is not None
        time.sleep(max(0.0, self.deadline - time.monotonic()) + 0.01)

    @rule()
    def observe(self) -> None:
        stats = self.stream.statistics()
        assert (stats.buffered >= 0 and stats.peak >= stats.buffered) or stats.closed
        assert self.stream.status in ("new", "running", "completed", "error", "timeout", "cancelled")

    @invariant()
    def received_is_prefix_of_emitted(self) -> None:
        n = len(self.received)
        assert n <= len(self.emitted)
        assert all(a is b for a, b in zip(self.received, self.emitted[:n]))

    def teardown(self) -> None:
        if self.stream is None:
            return
        if self.outcome is None and not self.ended and self.deadline is None:
            # Drain to the end: the stream must terminate with one outcome.
            self.cmds.put(("return", "ok"))
        outcomes = 0
        if self.outcome is None:
            try:
                for item in self.stream:
                    self.received.append(item)
                outcomes += 1
            except (ValueError, callstream.StreamTimeout):
                outcomes += 1
            self.received_is_prefix_of_emitted()
            if self.ended and self.stream.status in ("completed", "error"):
                assert self.received == self.emitted or len(self.received) == len(self.emitted)
        self.stream.__exit__(None, None, None)
        assert list(self.stream) == []  # after the end: nothing more, no second outcome
        self.cmds.put(("return", None))  # release a producer still waiting for commands
        wait_for_no_workers(5)


StreamMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_stream_state_machine = StreamMachine.TestCase
