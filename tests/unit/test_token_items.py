"""One definition of a token item (`events.token_text`), and the hot loops that inline it agree with it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import callstream
from callstream import BoundedSink, Event
from callstream.events import merge_tokens, token_text
from callstream.sinks import SinkName
from tests.property.strategies import items as awkward_items


class Text(str):
    """A `str` subclass: not a token item (only exact `str` is)."""


class Token(Event):
    """An `Event` subclass: not a token item (only exact `Event` is)."""

    __slots__ = ()


def test_token_text_is_the_text_of_token_items_only() -> None:
    assert token_text("hi") == "hi"
    assert token_text("") == ""  # an empty str is still a token item
    assert token_text(Event("token", text="hi")) == "hi"
    assert token_text(Event("token")) == ""  # a tool-call or closing chunk
    for other in (None, 0, b"x", Text("x"), Event("custom", text="x"), Event("llm_start"), ["x"], Token("token")):
        assert token_text(other) is None, other


def test_merge_tokens_joins_text_and_same_run_events_only() -> None:
    assert merge_tokens("a", "b") == "ab"
    a, b = Event("token", run_id="r", text="a"), Event("token", run_id="r", text="b")
    merged = merge_tokens(a, b)
    assert isinstance(merged, Event) and merged.text == "ab" and merged.run_id == "r"
    assert merge_tokens(a, Event("token", run_id="other", text="b")) is None
    assert merge_tokens(a, Event("llm_end", run_id="r")) is None
    assert merge_tokens(Event("llm_end", run_id="r"), a) is None
    assert merge_tokens("a", a) is None and merge_tokens(a, "a") is None
    assert merge_tokens(Text("a"), "b") is None


def test_merge_tokens_adds_chunks_and_refuses_chunks_that_cannot_be_added() -> None:
    a = Event("token", run_id="r", text="a", chunk=[1], data={"chunk": [1]})
    merged = merge_tokens(a, Event("token", run_id="r", text="b", chunk=[2]))
    assert isinstance(merged, Event) and merged.chunk == [1, 2] and merged.data["chunk"] == [1, 2]
    assert merge_tokens(a, Event("token", run_id="r", text="b", chunk=object())) is None


def test_bounded_sink_decides_through_its_hooks() -> None:
    # A sink of payloads it knows nothing about: ints, where only even ones may go, summed when merged.
    sink = BoundedSink(2, "coalesce", droppable=lambda x: x % 2 == 0, merge=lambda a, b: a + b)
    for x in (1, 2, 4, 8):
        sink.put(x)
    assert [sink.take(0).popleft(), sink.take(0).popleft()] == [1, 14]
    assert sink.statistics().coalesced == 2
    dropper = BoundedSink(1, "drop_newest", droppable=lambda x: x != "keep")
    for word in ("a", "keep", "b"):
        dropper.put(word)
    assert dropper.statistics().dropped == 1
    with pytest.raises(TypeError, match="droppable must be callable or None"):
        BoundedSink(2, droppable=True)  # type: ignore[arg-type]


# -- the faces' inlined copies agree with token_text ---------------------------------------------

_ITEMS = st.lists(
    st.one_of(
        awkward_items,
        st.builds(Text, st.text(max_size=3)),
        st.builds(lambda t: Event("token", run_id="r", text=t), st.text(max_size=3)),
        st.builds(lambda t: Event("custom", text=t), st.text(max_size=3)),
        st.builds(lambda t: Token("token", text=t), st.text(max_size=3)),
    ),
    max_size=30,
)


def _producer(items: list[Any]) -> Callable[[Callable[[Any], None]], None]:
    def produce(emit: Callable[[Any], None]) -> None:
        for item in items:
            emit(item)

    return produce


def _sync_for(stream: callstream.Stream[Any]) -> list[str]:
    for _ in stream:
        pass
    return []


def _sync_next(stream: callstream.Stream[Any]) -> list[str]:
    with stream:
        while True:
            try:
                next(stream)
            except StopIteration:
                return []


def _async_for(stream: callstream.AsyncStream[Any]) -> list[str]:
    async def go() -> list[str]:
        async with stream:
            async for _ in stream:
                pass
        return []

    return asyncio.run(go())


def _async_next(stream: callstream.AsyncStream[Any]) -> list[str]:
    async def go() -> list[str]:
        async with stream:
            while True:
                try:
                    await stream.__anext__()
                except StopAsyncIteration:
                    return []

    return asyncio.run(go())


def _async_tokens(stream: callstream.AsyncStream[Any], **kw: Any) -> list[str]:
    async def go() -> list[str]:
        return [t async for t in stream.tokens(**kw)]

    return asyncio.run(go())


PATHS: dict[str, tuple[str, Callable[..., list[str]]]] = {
    "sync for": ("sync", _sync_for),
    "sync next": ("sync", _sync_next),
    "sync tokens": ("sync", lambda s: list(s.tokens())),
    "sync answer_only": ("sync", lambda s: list(s.tokens(answer_only=True))),
    "async for": ("async", _async_for),
    "async next": ("async", _async_next),
    "async tokens": ("async", _async_tokens),
    "async answer_only": ("async", lambda s: _async_tokens(s, answer_only=True)),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("sink", ["queue", "deque"])
@given(items=_ITEMS)
def test_every_face_counts_token_items_as_token_text_does(path: str, sink: SinkName, items: list[Any]) -> None:
    face, consume = PATHS[path]
    stream = (callstream.from_callback if face == "sync" else callstream.afrom_callback)(_producer(items), sink=sink)
    texts = [t for t in map(token_text, items) if t]
    got = consume(stream)
    assert stream.text == "".join(texts)
    assert stream.summary.tokens == len(texts)
    if "tokens" in path or "answer_only" in path:  # str items have no structure: all of them are the answer
        assert got == texts
