"""`check_sink(make_sink)`: the sink conformance checks, for any `Sink` implementation.

In the spirit of `trio.testing.check_one_way_stream`. Needs only the standard
library and `callstream.sinks` (no LangChain).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ..errors import Cancelled
from ..sinks import Sink

__all__ = ("check_sink",)


class _AlwaysEqual:
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


def _drain(sink: Sink, deadline: float) -> list[Any]:
    got: list[Any] = []
    while time.monotonic() < deadline:
        batch = sink.take(0.05)
        while batch:
            got.append(batch.popleft())
        if sink.statistics().finished and not sink.take(0):
            return got
    raise AssertionError(f"sink did not finish in time; got {len(got)} items")


def check_sink(make_sink: Callable[[], Sink], *, timeout: float = 5.0) -> None:
    """Run the generic conformance checks against sinks made by `make_sink`.

    Checks: order and identity of awkward items (`None`, `""`, `"[DONE]"`,
    exceptions, always-equal objects) across a thread; that `take(0)` never
    blocks; that `finish()` wakes a waiting consumer; that `close()` wakes a
    waiting consumer, discards the buffer and makes `put` raise `Cancelled`;
    that `set_wakeup` fires once from the producer's side; and that
    `statistics()` reports what happened.

    Raises:
        AssertionError: describing the first check that failed.
    """
    deadline = time.monotonic() + timeout

    # 1. order and identity, producer in another thread
    items: list[Any] = [None, "", "[DONE]", 0, False, b"", _AlwaysEqual(), ValueError("x"), StopIteration()]
    items += [f"t{i}" for i in range(200)]
    sink = make_sink()

    def produce() -> None:
        for item in items:
            sink.put(item)
        sink.finish()

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    got = _drain(sink, deadline)
    t.join(timeout)
    assert len(got) == len(items), f"{len(items)} items put, {len(got)} taken"
    for i, (a, b) in enumerate(zip(got, items)):
        assert a is b, f"item {i}: {a!r} is not the object put ({b!r})"

    # 2. take(0) does not block on an empty sink
    sink = make_sink()
    t0 = time.monotonic()
    assert not sink.take(0), "take(0) on an empty sink returned items"
    assert time.monotonic() - t0 < 0.5, "take(0) blocked"

    # 3. finish() and close() wake a consumer blocked in take(None)
    for end in ("finish", "close"):
        sink = make_sink()
        woke = threading.Event()

        def consume(s: Sink = sink, e: threading.Event = woke) -> None:
            s.take(None)
            e.set()

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        _wait_until(partial(_consumers_waiting, sink), deadline, "consumer to block")
        getattr(sink, end)()
        assert woke.wait(max(deadline - time.monotonic(), 0.1)), f"{end}() did not wake a waiting consumer"

    # 4. close() discards buffered items and rejects later puts
    sink = make_sink()
    sink.put("a")
    sink.close()
    sink.close()  # idempotent
    assert not sink.take(0), "items survived close()"
    for late in ("b", None, 0, False, ""):  # falsy items too (anyio #731)
        try:
            sink.put(late)
        except Cancelled:
            continue
        raise AssertionError(f"put({late!r}) after close() did not raise Cancelled")
    assert sink.statistics().closed

    # 5. set_wakeup fires once on the next put
    sink = make_sink()
    fired: list[int] = []
    sink.set_wakeup(lambda: fired.append(1))
    sink.put("x")
    sink.put("y")
    assert fired == [1], f"wakeup fired {len(fired)} times for two puts (expected once)"
    sink.set_wakeup(lambda: fired.append(2))
    sink.set_wakeup(None)
    sink.finish()
    assert fired == [1], "a disarmed wakeup fired"


def _consumers_waiting(sink: Sink) -> bool:
    return sink.statistics().consumers_waiting == 1


def _wait_until(pred: Callable[[], bool], deadline: float, what: str) -> None:
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)
