"""Resuming never repeats nor skips: any disconnect points, any sink, both faces, each relay (issues 17, 18)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import callstream
from callstream import Event, MemoryRelay
from callstream._relay import Relay
from callstream.sinks import SinkName

#: the published stream's sink; the drop policies drop only what they drop in a direct read
PUBLISHED_SINKS: dict[str, Callable[[], SinkName | callstream.Sink]] = {
    "queue": lambda: "queue",
    "deque": lambda: "deque",
    "bounded": lambda: "bounded",
    "drop_oldest": lambda: callstream.BoundedSink(4, "drop_oldest"),
    "coalesce": lambda: callstream.BoundedSink(4, "coalesce"),
}


def segment(relay: Relay, key: str, face: str, after: str | None, k: int | None) -> tuple[list[Event], Any]:
    """Read up to `k` events (all, for None) after `after`, then leave."""
    got: list[Event] = []
    if face == "sync":
        with relay.subscribe(key, after=after) as sub:
            for event in sub:
                got.append(event)
                if len(got) == k:
                    break
        return got, sub

    async def go() -> Any:
        async with relay.asubscribe(key, after=after) as sub:
            async for event in sub:
                got.append(event)
                if len(got) == k:
                    break
        return sub

    return got, asyncio.run(go())


RUNS = {"n": st.integers(0, 40), "cuts": st.lists(st.integers(1, 12), max_size=6), "wait": st.booleans()}


@pytest.mark.parametrize("sink", list(PUBLISHED_SINKS))
@pytest.mark.parametrize("face", ["sync", "async"])
@settings(max_examples=40)
@given(**RUNS)
def test_resuming_after_the_last_id_equals_one_uninterrupted_read(
    face: str, sink: str, n: int, cuts: list[int], wait: bool
) -> None:
    check_resume(MemoryRelay(), face, sink, n, cuts, wait)


@pytest.fixture(scope="module")
def redis_relay(redis_server: Any) -> Iterator[Relay]:
    """One RedisRelay for every example (each run has keys of its own: examples do not meet)."""
    from callstream.redis import RedisRelay

    relay = RedisRelay(redis_server.url, prefix="props", lease=2.0)
    yield relay
    relay.close()


@pytest.mark.parametrize("sink", list(PUBLISHED_SINKS))
@pytest.mark.parametrize("face", ["sync", "async"])
@settings(max_examples=10)  # each async segment connects a new loop's client: fewer examples, same property
@given(**RUNS)
def test_resuming_over_redis_equals_one_uninterrupted_read(
    redis_relay: Relay, face: str, sink: str, n: int, cuts: list[int], wait: bool
) -> None:
    check_resume(redis_relay, face, sink, n, cuts, wait)


def check_resume(relay: Relay, face: str, sink: str, n: int, cuts: list[int], wait: bool) -> None:
    """Read a run in segments cut at random points: the pieces equal one uninterrupted read."""

    def producer(emit: Any) -> str:
        for i in range(n):
            emit(Event("token", run_id="r", text=f"<{i}>"))
        return "end"

    key = relay.publish(callstream.from_callback(producer, sink=PUBLISHED_SINKS[sink]()))
    if wait:  # else the first segments race the run: the property must hold either way
        segment(relay, key, face, None, None)
    pieces: list[Event] = []
    after = None
    for k in cuts:
        got, _ = segment(relay, key, face, after, k)
        pieces += got
        if got:
            after = got[-1].id
    rest, sub = segment(relay, key, face, after, None)
    pieces += rest
    whole, reference = segment(relay, key, face, None, None)
    assert pieces == whole
    assert [int(e.id) for e in whole] == list(range(1, len(whole) + 1))
    assert sub.output == reference.output == "end" and sub.text == "".join(e.text for e in rest)
    if sink not in ("drop_oldest", "coalesce"):
        assert "".join(e.text for e in whole) == "".join(f"<{i}>" for i in range(n))
