"""Random interleavings of emit/finish/fail/cancel from several threads (hypothesis).

Whatever the interleaving: no hang, nothing raised into a producer, each
producer's items in order and never duplicated, every item whose emit returned
before the first finish/fail was called is delivered, the outcome comes from an
end call that started before any other returned, and the cancel hook runs once
exactly when the consumer left an open stream.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import callstream
from callstream.sinks import SinkName

Op = tuple[str, int]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("emit"), st.integers(0, 0)),
        st.tuples(st.sampled_from(["finish", "fail"]), st.integers(0, 0)),
    ),
    max_size=30,
).map(lambda xs: [(kind, i) for i, (kind, _) in enumerate(xs)])

SINKS: dict[str, Callable[[], SinkName | callstream.Sink]] = {
    "queue": lambda: "queue",
    "deque": lambda: "deque",
    "bounded": lambda: callstream.BoundedSink(2),
    "rendezvous": lambda: callstream.BoundedSink(0),
}


class Recorder:
    def __init__(self) -> None:
        self.seq = itertools.count()  # next() is atomic under the GIL
        self.emits: dict[tuple[int, int], tuple[int, int]] = {}  # item -> (called, returned)
        self.ends: list[tuple[str, Any, int, int]] = []  # (kind, payload, called, returned)
        self.raised: list[BaseException] = []
        self.hooks = 0
        self.lock = threading.Lock()


def run_case(scripts: list[list[Op]], sink: str, cancel_at: int | None, face: str) -> None:
    rec = Recorder()
    threads: list[threading.Thread] = []

    def start(push: callstream.Push) -> None:
        def hook() -> None:
            with rec.lock:
                rec.hooks += 1

        push.on_cancel(hook)
        barrier = threading.Barrier(len(scripts))

        def producer(k: int, script: list[Op]) -> None:
            try:
                barrier.wait(5)
                for kind, i in script:
                    called = next(rec.seq)
                    if kind == "emit":
                        push.emit((k, i))
                        rec.emits[(k, i)] = (called, next(rec.seq))
                    elif kind == "finish":
                        push.finish((k, i))
                        rec.ends.append(("finish", (k, i), called, next(rec.seq)))
                    else:
                        exc = ValueError((k, i))
                        push.fail(exc)
                        rec.ends.append(("fail", exc, called, next(rec.seq)))
            except BaseException as exc:
                rec.raised.append(exc)

        threads.extend(threading.Thread(target=producer, args=(k, s)) for k, s in enumerate(scripts))
        for t in threads:
            t.start()

        producers = list(threads)

        def closer() -> None:  # the SDK's own end, if no script ended the stream
            for t in producers:
                t.join(10)
            called = next(rec.seq)
            push.finish("closer")
            rec.ends.append(("finish", "closer", called, next(rec.seq)))

        closing = threading.Thread(target=closer)
        threads.append(closing)  # joined below too: its end is recorded once finish() returned
        closing.start()

    stream = (callstream.from_push if face == "sync" else callstream.afrom_push)(start, sink=SINKS[sink]())
    got: list[Any] = []
    error: BaseException | None = None

    def take(item: Any) -> bool:
        got.append(item)
        return cancel_at is None or len(got) < cancel_at

    if face == "sync":
        try:
            with stream as s:
                for item in s:
                    if not take(item):
                        break
        except ValueError as exc:
            error = exc
    else:

        async def go() -> None:
            nonlocal error
            try:
                async with stream as s:
                    async for item in s:
                        if not take(item):
                            break
            except ValueError as exc:
                error = exc

        asyncio.run(go())

    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a producer hung"
    assert not rec.raised, rec.raised
    assert len(got) == len(set(got)), "duplicated item"
    for k in range(len(scripts)):
        mine = [i for kk, i in got if kk == k]
        assert mine == sorted(mine), "a producer's order was not kept"

    status = stream.status
    if status == "cancelled":
        assert rec.hooks == 1
        assert cancel_at is not None and len(got) == cancel_at
        return
    assert rec.hooks == 0
    first_return = min(returned for *_, returned in rec.ends)
    winners = [e for e in rec.ends if e[2] <= first_return]
    read_to_the_end = cancel_at is None or len(got) < cancel_at
    if status == "completed":
        assert any(kind == "finish" and payload == stream.output for kind, payload, *_ in winners)
    else:
        assert status == "error"
        raised = error if read_to_the_end else stream._core.value
        assert any(kind == "fail" and payload is raised for kind, payload, *_ in winners)
    if read_to_the_end:
        first_call = min(called for *_, called, _ in rec.ends)
        before = {item for item, (_, returned) in rec.emits.items() if returned < first_call}
        assert before <= set(got), f"lost: {sorted(before - set(got))}"


@settings(max_examples=150)
@given(
    scripts=st.lists(ops, min_size=1, max_size=4),
    sink=st.sampled_from(sorted(SINKS)),
    cancel_at=st.none() | st.integers(1, 40),
    face=st.sampled_from(["sync", "async"]),
)
def test_random_interleavings(scripts: list[list[Op]], sink: str, cancel_at: int | None, face: str) -> None:
    run_case(scripts, sink, cancel_at, face)
