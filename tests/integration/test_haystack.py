"""callstream.haystack against Haystack's real OpenAIChatGenerator and Agent, over real HTTP
to the local OpenAI-compatible server (tests/openai_server.py). Telemetry off."""

from __future__ import annotations

import os

os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"  # before Haystack is imported: no network calls

import asyncio
import json
import time
from typing import Any

import openai
import pytest
from haystack import Pipeline, component
from haystack.components.agents import Agent
from haystack.components.generators.chat import OpenAIChatGenerator
from haystack.core.errors import PipelineRuntimeError
from haystack.dataclasses import ChatMessage, StreamingChunk
from haystack.telemetry import _telemetry
from haystack.tools import Tool
from haystack.utils import Secret
from httpx_sse._decoders import SSEDecoder

import callstream
import callstream.openai
from callstream._web import LINE_SEP as _LINE_SEP
from callstream.haystack import aiter_run, iter_run
from callstream.sse import ndjson, sse
from tests.helpers import drain_into

_tags = iter(range(1_000_000))


def tag(name: str) -> str:
    return f"hs-{name}-{next(_tags)}"


def generator(server: Any, spec: str, **kw: Any) -> OpenAIChatGenerator:
    return OpenAIChatGenerator(
        api_key=Secret.from_token("test-key"),
        model=f"scripted:{spec}",
        api_base_url=server.base_url,
        max_retries=0,
        timeout=10,
        **kw,
    )


def weather(city: str) -> str:
    return f"18C in {city}"


WEATHER = Tool(
    name="get_weather",
    description="The current weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    function=weather,
)


def make(face: str, target: Any, data: Any, **kw: Any) -> Any:
    return iter_run(target, data, **kw) if face == "sync" else aiter_run(target, data, **kw)


def collect(face: str, stream: Any) -> list[callstream.Event]:
    got: list[Any] = []
    drain_into(face, stream, got)
    return got


def user(text: str) -> dict[str, Any]:
    return {"messages": [ChatMessage.from_user(text)]}


def test_telemetry_is_off() -> None:
    assert _telemetry.telemetry is None


def test_generator_tokens_equal_the_script_and_the_users_callback_still_runs(face: str, openai_server: Any) -> None:
    seen: list[StreamingChunk] = []
    data = user("hi")
    if face == "sync":
        llm = generator(openai_server, f"tokens=30,tag={tag('gen')}", streaming_callback=seen.append)
    else:
        llm = generator(openai_server, f"tokens=30,tag={tag('gen')}")

        async def mine(chunk: StreamingChunk) -> None:  # a user's async callback, given at run time
            seen.append(chunk)

        data["streaming_callback"] = mine
    stream = make(face, llm, data)
    events = collect(face, stream)
    texts = [e.text for e in events if e.kind == "token" and e.text]
    assert texts == [f"w{i} " for i in range(30)]
    assert stream.output["replies"][0].text == "".join(texts) == stream.text
    assert {e.metadata["component"] for e in events} == {"OpenAIChatGenerator"}
    assert {e.name for e in events} == {"OpenAIChatGenerator"}
    assert len({e.run_id for e in events}) == 1  # one model reply
    assert [c.content for c in seen] == [e.text for e in events]  # the user's callback saw every chunk
    assert all(e.chunk is c for e, c in zip(events, seen))
    assert stream.summary.llm_calls == 1 and stream.summary.status == "completed"


def test_agent_with_a_tool_streams_tool_events_in_order(face: str, openai_server: Any) -> None:
    agent = Agent(chat_generator=generator(openai_server, f"tag={tag('agent')}"), tools=[WEATHER])
    stream = make(face, agent, user("Weather in Paris?"))
    events = collect(face, stream)
    kinds = [e.kind for e in events if e.kind != "token" or e.text]
    assert kinds == ["tool_start", "tool_end"] + ["token"] * 6
    start = next(e for e in events if e.kind == "tool_start")
    end = next(e for e in events if e.kind == "tool_end")
    assert start.name == end.name == "get_weather" and start.run_id == end.run_id == "call_1"
    assert start.data["input"] == {"city": "otters"} and end.data["output"] == "18C in otters"
    assert {e.metadata["component"] for e in events} == {"Agent"}
    assert "".join(e.text for e in events) == "The answer is 18C in otters."
    assert stream.output["last_message"].text == "The answer is 18C in otters."
    summary = stream.summary
    assert summary.llm_calls == 2 and [t.name for t in summary.tool_calls] == ["get_weather"]
    assert summary.tool_calls[0].result == "18C in otters"


def test_break_closes_the_http_response_within_50_ms(face: str, openai_server: Any) -> None:
    name = tag("break")
    llm = generator(openai_server, f"tokens=5000,delay_ms=2,tag={name}")
    t_break = 0.0
    got = 0
    if face == "sync":
        with iter_run(llm, user("go")) as stream:
            for _token in stream.tokens():
                got += 1
                if got == 5:
                    t_break = time.monotonic()
                    break
        (row,) = openai_server.wait_ended(name)
    else:

        async def go() -> dict[str, Any]:
            nonlocal t_break, got
            async with aiter_run(llm, user("go")) as stream:
                async for _token in stream.tokens():
                    got += 1
                    if got == 5:
                        t_break = time.monotonic()
                        break
            end = time.monotonic() + 5
            while True:  # keep the loop running: the cancelled run closes its response on it
                (row,) = openai_server.stats(name)
                if row["t_end"] is not None or time.monotonic() > end:
                    return row
                await asyncio.sleep(0.001)

        row = asyncio.run(go())
    assert row["disconnected"], row
    assert row["t_end"] - t_break < 0.05, row["t_end"] - t_break
    assert row["sent"] < 5 + 25  # < 25 chunks after the break (RELIABILITY, upstream abort)


def test_error_from_a_component_is_the_same_object(face: str) -> None:
    boom = LookupError("the index is gone")

    @component
    class Failing:
        @component.output_types(replies=list[ChatMessage])
        def run(self, messages: list[ChatMessage], streaming_callback: Any = None) -> dict[str, Any]:
            for word in ["one ", "two ", "three "]:
                streaming_callback(StreamingChunk(content=word))
            raise boom

    got: list[Any] = []
    with pytest.raises(LookupError) as info:
        drain_into(face, make(face, Failing(), user("x"), sink="bounded"), got)
    assert info.value is boom and [e.text for e in got] == ["one ", "two ", "three "]

    pipeline = Pipeline()
    pipeline.add_component("failing", Failing())
    with pytest.raises(PipelineRuntimeError) as wrapped:  # what Pipeline.run raises
        drain_into(face, make(face, pipeline, {"failing": user("x")}), [])
    assert wrapped.value.__cause__ is boom


def test_http_errors_reach_the_consumer(face: str, openai_server: Any) -> None:
    with pytest.raises(openai.InternalServerError):
        collect(face, make(face, generator(openai_server, f"status=500,tag={tag('500')}"), user("x")))
    got: list[Any] = []
    with pytest.raises(openai.APIError) as info:
        drain_into(
            face, make(face, generator(openai_server, f"tokens=10,fail_after=3,tag={tag('mid')}"), user("x")), got
        )
    assert "".join(e.text for e in got) == "w0 w1 w2 "
    assert any("token(s) were delivered" in n for n in getattr(info.value, "__notes__", []))


def test_first_token_timeout_closes_the_request(face: str, openai_server: Any) -> None:
    name = tag("ttft")
    llm = generator(openai_server, f"tokens=5,ttft_ms=600,delay_ms=2,tag={name}")
    t0 = time.monotonic()
    with pytest.raises(callstream.StreamTimeout) as info:
        collect(face, make(face, llm, user("x"), first_token_timeout=0.2))
    assert info.value.limit == "first_token_timeout" and time.monotonic() - t0 < 0.5
    (row,) = openai_server.wait_ended(name)
    assert row["disconnected"] or row["sent"] == 0, row


def test_idle_timeout_after_the_first_tokens(face: str, openai_server: Any) -> None:
    llm = generator(openai_server, f"tokens=20,delay_ms=2000,tag={tag('idle')}")
    got: list[Any] = []
    with pytest.raises(callstream.StreamTimeout) as info:
        drain_into(face, make(face, llm, user("x"), idle_timeout=1.0), got)  # first token within 1 s, loaded or not
    assert info.value.limit == "idle_timeout" and "".join(e.text for e in got) == "w0 "


def two_generators(server: Any) -> Pipeline:
    # A fresh one per run: a generator's async client belongs to the event loop it first ran on.
    pipeline = Pipeline()
    pipeline.add_component("llm_a", generator(server, f"tokens=3,prefix=a,tag={tag('a')}"))
    pipeline.add_component("llm_b", generator(server, f"tokens=4,prefix=b,tag={tag('b')}"))
    pipeline.connect("llm_a.replies", "llm_b.messages")
    return pipeline


def test_two_generator_pipeline_names_each_component(face: str, openai_server: Any) -> None:
    stream = make(face, two_generators(openai_server), {"llm_a": user("x")})
    events = collect(face, stream)
    by = {name: [e for e in events if e.metadata["component"] == name] for name in ("llm_a", "llm_b")}
    assert "".join(e.text for e in by["llm_a"]) == "a0 a1 a2 "
    assert "".join(e.text for e in by["llm_b"]) == "b0 b1 b2 b3 "
    assert all(e.name == e.metadata["component"] for e in events)
    assert events.index(by["llm_a"][-1]) < events.index(by["llm_b"][0])
    assert len({e.run_id for e in by["llm_a"]} | {e.run_id for e in by["llm_b"]}) == 2
    assert stream.output["llm_b"]["replies"][0].text == "b0 b1 b2 b3 "
    only_b = collect(face, make(face, two_generators(openai_server), {"llm_a": user("x")}, include_names=["llm_b"]))
    assert {e.metadata["component"] for e in only_b} == {"llm_b"}


def test_flat_pipeline_inputs(openai_server: Any) -> None:
    pipeline = Pipeline()
    pipeline.add_component("llm", generator(openai_server, f"tokens=2,tag={tag('flat')}"))
    with iter_run(pipeline, {"messages": [ChatMessage.from_user("x")]}) as stream:
        assert list(stream.tokens()) == ["w0 ", "w1 "]


def test_arguments_checked_at_the_call(openai_server: Any) -> None:
    llm = generator(openai_server, "tokens=1")
    with pytest.raises(TypeError, match="Pipeline"):
        iter_run(object(), {})
    with pytest.raises(TypeError, match="dict"):
        iter_run(llm, ["not", "a", "dict"])  # type: ignore[arg-type]

    async def mine(chunk: StreamingChunk) -> None:
        pass

    with pytest.raises(TypeError, match="coroutine"):
        iter_run(llm, {**user("x"), "streaming_callback": mine})
    with pytest.raises(ValueError):
        iter_run(llm, user("x"), timeout=0)


def sse_frames(raw: bytes) -> list[tuple[str, Any]]:
    decoder = SSEDecoder()
    out = []
    for line in _LINE_SEP.split(raw.decode())[:-1]:
        event = decoder.decode(line)
        if event is not None:
            out.append((event.event, json.loads(event.data) if event.data.startswith("{") else event.data))
    return out


def test_encoders_take_a_haystack_stream_unchanged(openai_server: Any) -> None:
    agent = Agent(chat_generator=generator(openai_server, f"tag={tag('sse')}"), tools=[WEATHER])
    frames = sse_frames(b"".join(sse(iter_run(agent, user("Weather?")))))
    names = [name for name, _ in frames]
    assert names == ["tool_start", "tool_end"] + ["token"] * 6 + ["done"]
    assert frames[0][1]["name"] == "get_weather" and frames[0][1]["input"] == {"city": "otters"}
    assert frames[1][1]["output"] == "18C in otters"
    assert "".join(p["text"] for n, p in frames if n == "token") == "The answer is 18C in otters."

    lines = [json.loads(line) for line in b"".join(ndjson(iter_run(agent, user("Weather?")))).splitlines() if line]
    assert [line["event"] for line in lines][-1] == "done" and lines[0]["event"] == "tool_start"

    chunks = list(callstream.openai.chunks(iter_run(generator(openai_server, "tokens=3"), user("x"))))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "w0 w1 w2 "


def test_async_run_is_a_task_and_closes_on_cancel(openai_server: Any) -> None:
    """aiter_run with a never-blocking sink runs run_async on the loop (no thread);
    cancelling the consumer's task stops it and leaves no task behind."""
    name = tag("task")
    llm = generator(openai_server, f"tokens=5000,delay_ms=2,tag={name}")

    async def go() -> None:
        first = asyncio.Event()

        async def consume() -> None:
            async with aiter_run(llm, user("x")) as stream:
                async for _ in stream.tokens():
                    first.set()

        baseline = asyncio.all_tasks()
        task = asyncio.get_running_loop().create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(openai_server.wait_ended, name)  # the server saw the request end
        leftover = asyncio.all_tasks() - baseline - {task}
        if leftover:  # tasks the run started: they end on their own, soon
            await asyncio.wait(leftover, timeout=5)
        assert not (asyncio.all_tasks() - baseline - {task})

    asyncio.run(go())
    (row,) = openai_server.wait_ended(name)
    assert row["disconnected"]


def test_total_timeout_stops_the_run_and_closes_the_request(face: str, openai_server: Any) -> None:
    name = tag("total")
    llm = generator(openai_server, f"tokens=5000,delay_ms=2,tag={name}")
    got: list[Any] = []
    with pytest.raises(callstream.StreamTimeout) as info:
        drain_into(face, make(face, llm, user("x"), timeout=0.3), got)
    assert info.value.limit == "timeout" and got
    (row,) = openai_server.wait_ended(name)
    assert row["disconnected"] and row["sent"] < 5000, row
