"""A language model pulled by its consumer (`PullWorker`): no thread, no task, same guarantees."""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool

import callstream
from callstream import StreamTimeout
from callstream._face import IDLE
from callstream._worker import PullWorker
from callstream.testing import ScriptedChatModel


class Started(BaseCallbackHandler):
    """Sets `event` when a chat model starts (the consumer is then inside its step)."""

    run_inline = True  # in the model's task, not in the loop's executor

    def __init__(self, event: threading.Event | asyncio.Event) -> None:
        self.event = event

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.event.set()


@tool
def lookup(q: str) -> str:
    """Look something up."""
    return q


def test_aiter_model_runs_in_the_consumers_task() -> None:
    model = ScriptedChatModel(responses=["hello there"], chunk_size=2)

    async def go() -> tuple[list[str], Any, int]:
        stream = callstream.aiter_callbacks(model, "hi")
        assert type(stream._core.worker) is PullWorker
        tokens = []
        most = 0
        async with stream:
            async for event in stream:
                most = max(most, len(asyncio.all_tasks()))
                if event.kind == "token" and event.text:
                    tokens.append(event.text)
        return tokens, stream.output, most

    tokens, output, most = asyncio.run(go())
    assert "".join(tokens) == "hello there" and len(tokens) == 6
    assert output.content == "hello there" and output == model.invoke("hi").model_copy(update={"id": output.id})
    assert most == 1  # the consumer's own task only


def test_iter_model_runs_in_the_consumers_thread() -> None:
    model = ScriptedChatModel(responses=["hello there"])
    before = threading.active_count()
    seen = []
    with callstream.iter_callbacks(model, "hi") as stream:
        assert type(stream._core.worker) is PullWorker
        for text in stream.tokens():
            seen.append(text)
            assert threading.active_count() == before
    assert "".join(seen) == "hello there" and stream.status == "completed"


def test_bound_model_is_pulled_and_a_chain_is_not() -> None:
    model = ScriptedChatModel(responses=["ok"])
    assert type(callstream.iter_callbacks(model.bind_tools([lookup]), "hi")._core.worker) is PullWorker
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model
    assert type(callstream.iter_callbacks(chain, {"q": "hi"})._core.worker) is not PullWorker
    # a sync stream with a time limit keeps a thread (nothing could interrupt a read in the consumer's)
    assert type(callstream.iter_callbacks(model, "hi", timeout=5)._core.worker) is not PullWorker
    # a sink that can block keeps a thread or task (a full sink would wait for its own consumer)
    assert type(callstream.aiter_callbacks(model, "hi", sink="bounded")._core.worker) is not PullWorker


def test_async_deadline_interrupts_a_stalled_model_step() -> None:
    model = ScriptedChatModel(responses=["never"], ttft=30)

    async def go() -> None:
        stream = callstream.aiter_callbacks(model, "hi", first_token_timeout=0.2)
        with pytest.raises(StreamTimeout) as info:
            async with stream:
                async for _ in stream:
                    pass
        assert info.value.limit == "first_token_timeout"
        assert stream.status == "timeout"
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # our interruption was taken back

    asyncio.run(go())
    assert model.finished.wait(5) and model.tokens_sent == 0


def test_close_from_another_thread_interrupts_an_async_step() -> None:
    model = ScriptedChatModel(responses=["never"], ttft=30)
    started = threading.Event()

    async def go() -> list[Any]:
        stream = callstream.aiter_callbacks(model, "hi", config={"callbacks": [Started(started)]})
        closer = threading.Thread(target=lambda: started.wait(5) and stream.close())
        closer.start()
        got = [event.kind async for event in stream]
        closer.join(5)
        assert stream.status == "cancelled"
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        return got

    assert asyncio.run(asyncio.wait_for(go(), 10)) == []  # the start event was buffered: close() drops it
    assert started.is_set() and model.finished.wait(5) and model.tokens_sent == 0


def test_cancelling_the_consumer_task_stops_the_model_and_propagates() -> None:
    model = ScriptedChatModel(responses=["never"], ttft=30)

    async def go() -> Any:
        started = asyncio.Event()
        stream = callstream.aiter_callbacks(model, "hi", config={"callbacks": [Started(started)]})

        async def consume() -> None:
            async with stream:
                async for _ in stream:
                    pass

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return stream

    stream = asyncio.run(go())
    assert stream.status == "cancelled"
    assert model.finished.wait(5) and model.tokens_sent == 0


@pytest.mark.parametrize("face", ["sync", "async"])
def test_break_closes_the_model(face: str) -> None:
    model = ScriptedChatModel(responses=["x" * 200])
    if face == "sync":
        with callstream.iter_callbacks(model, "hi") as stream:
            for _ in stream.tokens():
                break
    else:

        async def go() -> Any:
            async with callstream.aiter_callbacks(model, "hi") as stream:
                async for event in stream:
                    if event.kind == "token":
                        break
            # the generator's aclose() runs as a task of its own: let it end
            await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))
            return stream

        stream = asyncio.run(go())
    assert model.finished.wait(5)
    assert model.tokens_sent < 200
    assert stream.status == "cancelled"


def test_close_from_another_thread_stops_a_sync_step_at_the_next_token() -> None:
    model = ScriptedChatModel(responses=["x" * 50], ttft=0.05, delay=0.01)
    with callstream.iter_callbacks(model, "hi") as stream:
        it = stream.tokens()
        assert next(it) == "x"
        closer = threading.Thread(target=stream.close)
        closer.start()
        closer.join(5)
        assert list(it) == []
    assert model.finished.wait(5) and model.tokens_sent < 50
    assert stream.status == "cancelled"


@pytest.mark.parametrize("face", ["sync", "async"])
def test_an_idle_wait_hands_the_model_to_a_worker(face: str) -> None:
    # A heartbeat's idle wait must not advance the model: from there it runs on its own.
    model = ScriptedChatModel(responses=["abc"], ttft=0.3, delay=0.3)
    if face == "sync":
        with callstream.iter_callbacks(model, "hi") as stream:
            got = list(stream._items(idle=0.05))
    else:

        async def go() -> tuple[list[Any], Any]:
            async with callstream.aiter_callbacks(model, "hi") as stream:
                return [item async for item in stream._items(idle=0.05)], stream

        got, stream = asyncio.run(asyncio.wait_for(go(), 10))
    assert IDLE in got
    assert [e.text for e in got if e is not IDLE and e.kind == "token" and e.text] == ["a", "b", "c"]
    assert stream.status == "completed" and stream.output.content == "abc"
    assert type(stream._core.worker) is not PullWorker


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_model_error_is_raised_as_the_same_object(face: str) -> None:
    model = ScriptedChatModel(responses=["abcdef"], fail_after=3, error=ValueError("boom"))
    got: list[str] = []
    with pytest.raises(ValueError, match="boom") as info:
        if face == "sync":
            for text in callstream.iter_callbacks(model, "hi").tokens():
                got.append(text)
        else:

            async def go() -> None:
                async for text in callstream.aiter_callbacks(model, "hi").tokens():
                    got.append(text)

            asyncio.run(go())
    assert info.value is model.last_error
    assert got == ["a", "b", "c"]
