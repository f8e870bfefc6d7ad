"""The web encoders without a server: frames, heartbeats, errors, OpenAI chunks."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import openai
import pytest
from httpx_sse._decoders import SSEDecoder

import callstream
import callstream.openai
from callstream._web import LINE_SEP as _LINE_SEP
from callstream.sse import andjson, asse, ndjson, sse
from callstream.testing import ScriptedChatModel, agent_script
from tests.helpers import Counter


def decode(raw: bytes) -> list[tuple[str, str]]:
    decoder = SSEDecoder()
    out = []
    for line in _LINE_SEP.split(raw.decode())[:-1]:
        event = decoder.decode(line)
        if event is not None:
            out.append((event.event, event.data))
    return out


def collect(face: str, body: Any) -> bytes:
    if face == "sync":
        return b"".join(body)

    async def go() -> bytes:
        return b"".join([chunk async for chunk in body])

    return asyncio.run(go())


def encode(face: str, make: Any, producer: Any, **kw: Any) -> bytes:
    if face == "sync":
        return collect(face, make[0](callstream.from_callback(producer), **kw))
    return collect(face, make[1](callstream.afrom_callback(producer), **kw))


def test_sse_tokens_then_done(face: str) -> None:
    raw = encode(face, (sse, asse), Counter(3))
    events = decode(raw)
    assert [(n, json.loads(d)) for n, d in events] == [
        ("token", {"text": "t0"}),
        ("token", {"text": "t1"}),
        ("token", {"text": "t2"}),
        ("done", {"status": "completed"}),
    ]
    assert b"id:" not in raw  # a per-response counter is no position: only relay events carry an id


def test_relay_events_carry_their_id_and_nothing_else_does(face: str) -> None:
    relay = callstream.MemoryRelay()
    key = relay.reserve()
    relay.run(callstream.from_callback(Counter(3)), key=key)  # ended: id "1" was issued
    subscription: Any = relay.subscribe(key, after="1") if face == "sync" else relay.asubscribe(key, after="1")
    raw = collect(face, (sse if face == "sync" else asse)(subscription))
    assert raw.count(b"id: ") == 2 and b"id: 2\n" in raw and b"id: 3\n" in raw
    assert raw.endswith(b'event: done\ndata: {"status": "completed"}\n\n')
    subscription = relay.subscribe(key) if face == "sync" else relay.asubscribe(key)
    lines = collect(face, (ndjson if face == "sync" else andjson)(subscription))
    assert [json.loads(line).get("id") for line in lines.splitlines()] == ["1", "2", "3", None]


def test_a_gap_is_the_clients_not_a_server_error(face: str, caplog: pytest.LogCaptureFixture) -> None:
    # A stale Last-Event-ID that a subscription reports at its first read (a RedisRelay on a
    # loop): one `error` event for the client, one line at INFO for the log, no traceback.
    gap = callstream.StreamGap("no event '99' was issued under 'abc…' (the last is 3)")
    with caplog.at_level("INFO", logger="callstream"):
        raw = encode(face, (sse, asse), Counter(0, error=gap, fail_after=0))
    assert [(n, json.loads(d)) for n, d in decode(raw)] == [("error", {"type": "StreamGap", "message": str(gap)})]
    (record,) = [r for r in caplog.records if r.name.startswith("callstream")]
    assert record.levelname == "INFO" and record.exc_info is None and "gone" in record.getMessage()


def test_error_event_is_safe_and_ends_cleanly(face: str) -> None:
    secret = RuntimeError("api key sk-SECRET leaked")
    raw = encode(face, (sse, asse), Counter(5, fail_after=2, error=secret))
    name, data = decode(raw)[-1]
    assert name == "error" and json.loads(data) == {
        "type": "RuntimeError",
        "message": "the stream failed (RuntimeError)",
    }
    assert b"sk-SECRET" not in raw and b"Traceback" not in raw


def test_heartbeat_while_silent(face: str) -> None:
    release = threading.Event()

    def producer(emit: Any) -> None:
        emit("a")
        release.wait(0.35)
        emit("b")

    raw = encode(face, (sse, asse), producer, heartbeat=0.1)
    assert raw.count(b": ping\n") >= 2
    assert b": ping\n\n" not in raw  # no blank line: decoders would dispatch an empty event
    assert [json.loads(d)["text"] for n, d in decode(raw) if n == "token"] == ["a", "b"]


def test_ndjson_lines(face: str) -> None:
    raw = encode(face, (ndjson, andjson), Counter(2))
    lines = [json.loads(line) for line in raw.decode().splitlines() if line]
    assert lines == [
        {"event": "token", "text": "t0"},
        {"event": "token", "text": "t1"},
        {"event": "done", "status": "completed"},
    ]


def test_text_mode_and_injection_attempt() -> None:
    def producer(emit: Any) -> None:
        emit(" hello\n\nevent: admin\ndata: pwned")

    raw = b"".join(sse(callstream.from_callback(producer), text=True))
    events = decode(raw)
    assert [n for n, _ in events] == ["token", "done"]
    assert events[0][1] == " hello\n\nevent: admin\ndata: pwned"


def test_closing_the_body_closes_the_stream() -> None:
    counter = Counter(100_000, delay=0.0005)
    body = sse(callstream.from_callback(counter))
    next(body)
    body.close()  # type: ignore[attr-defined]  # what a WSGI server does when the client leaves (sse() is typed Iterator)
    assert counter.finished.wait(2)


def test_encoders_reject_the_wrong_face() -> None:
    with pytest.raises(TypeError, match="AsyncStream"):
        asse(callstream.from_callback(Counter(1)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="iter_callbacks"):
        sse(callstream.afrom_callback(Counter(1)))  # type: ignore[arg-type]


def test_agent_events_as_sse_include_tools() -> None:
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    model = ScriptedChatModel(respond=agent_script(tool="add", args={"a": 1, "b": 2}, answer="{result}!"))
    agent = create_agent(model, tools=[add])
    raw = b"".join(sse(callstream.iter_callbacks(agent, {"messages": [("user", "1+2")]})))
    events = [(n, json.loads(d)) for n, d in decode(raw)]
    assert [n for n, _ in events] == ["tool_start", "tool_end", "token", "token", "done"]
    assert events[0][1]["input"] == {"a": 1, "b": 2} and events[1][1]["output"] == "3"


def test_openai_chunks_objects_and_tool_calls(face: str) -> None:
    model = ScriptedChatModel(respond=agent_script(tool="add", args={"a": 1}, answer="x", preamble="Hi"))
    if face == "sync":
        chunks = list(callstream.openai.chunks(callstream.iter_callbacks(model, "q"), tool_calls=True))
    else:

        async def go() -> list[Any]:
            return [c async for c in callstream.openai.achunks(callstream.aiter_callbacks(model, "q"), tool_calls=True)]

        chunks = asyncio.run(go())
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hi"
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function is not None and calls[0].function.name == "add" and calls[0].id == "call_add"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls if tc.function)) == {"a": 1}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_wire_format_ends_with_done_or_error() -> None:
    raw = b"".join(callstream.openai.sse(callstream.from_callback(Counter(2))))
    assert raw.endswith(b"data: [DONE]\n\n")
    raw = b"".join(callstream.openai.sse(callstream.from_callback(Counter(5, fail_after=1))))
    last = raw.strip().split(b"\n\n")[-1]
    assert json.loads(last[len(b"data: ") :])["error"]["type"] == "server_error"


@pytest.mark.parametrize("kw", [{"heartbeat": 0}, {"heartbeat": -1.0}, {"kinds": ["tokens"]}, {"kinds": "token"}])
def test_encoder_arguments_checked_at_the_call(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"heartbeat|event kinds"):
        sse(callstream.from_callback(Counter(1)), **kw)


def test_openai_chunks_reject_the_wrong_face() -> None:
    with pytest.raises(TypeError, match="AsyncStream"):
        callstream.openai.achunks(callstream.from_callback(Counter(1)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Stream"):
        callstream.openai.chunks(callstream.afrom_callback(Counter(1)))  # type: ignore[arg-type]


def sdk_chunks(raw: bytes) -> list[Any]:
    """The wire bytes as the openai SDK's own `Stream` parses them (its SSE decoder and chunk types)."""
    import httpx2
    from openai.types.chat import ChatCompletionChunk

    response = httpx2.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=raw,
        request=httpx2.Request("POST", "http://test/v1/chat/completions"),
    )
    client = openai.OpenAI(api_key="x", base_url="http://test/v1")
    return list(openai.Stream(cast_to=ChatCompletionChunk, response=response, client=client))


def weather_agent() -> Any:
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Weather."""
        return f"sunny in {city}"

    respond = agent_script(tool="get_weather", args={"city": "Oslo"}, answer="It is {result}.", preamble="Checking. ")
    return create_agent(ScriptedChatModel(respond=respond, chunk_size=4), tools=[get_weather])


def test_executed_tool_calls_are_never_calls_for_the_client(face: str) -> None:
    # issue 11.5: an agent that ran its tool and answered ends with "stop"; the call it ran is shown
    # as `executed_tool_calls` and `tool_results`, which an OpenAI client's tool loop does not read
    inputs = {"messages": [("user", "weather?")]}
    if face == "sync":
        raw = b"".join(callstream.openai.sse(callstream.iter_callbacks(weather_agent(), inputs), tool_calls=True))
    else:
        stream = callstream.aiter_callbacks(weather_agent(), inputs)
        raw = collect(face, callstream.openai.asse(stream, tool_calls=True))
    chunks = sdk_chunks(raw)
    deltas = [c.choices[0].delta for c in chunks]
    assert not any(d.tool_calls for d in deltas)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(d.content or "" for d in deltas) == "Checking. It is sunny in Oslo."
    executed = [call for d in deltas for call in (d.model_extra or {}).get("executed_tool_calls", [])]
    results = [r for d in deltas for r in (d.model_extra or {}).get("tool_results", [])]
    assert executed == [
        {
            "id": "call_get_weather",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        }
    ]
    assert results == [{"tool_call_id": "call_get_weather", "name": "get_weather", "content": "sunny in Oslo"}]
    # without tool_calls=True: the text only
    plain = sdk_chunks(b"".join(callstream.openai.sse(callstream.iter_callbacks(weather_agent(), inputs))))
    assert not any((c.choices[0].delta.model_extra or {}) for c in plain)
    assert plain[-1].choices[0].finish_reason == "stop"


def test_a_models_own_tool_call_is_for_the_client() -> None:
    # nothing in the stream runs it: `delta.tool_calls`, finish_reason "tool_calls", as the API sends it
    model = ScriptedChatModel(respond=agent_script(tool="add", args={"a": 1, "b": 2}, answer="x"))
    chunks = sdk_chunks(b"".join(callstream.openai.sse(callstream.iter_callbacks(model, "1+2?"), tool_calls=True)))
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.id, tc.function.name, json.loads(tc.function.arguments)) for tc in calls] == [
        ("call_add", "add", {"a": 1, "b": 2})
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_tool_call_a_later_model_call_superseded_is_not_sent() -> None:
    from langchain_core.runnables import RunnableLambda

    from callstream.testing import tool_call

    first = ScriptedChatModel(responses=[tool_call("add", {"a": 1})])
    chain = first | RunnableLambda(lambda message: "answer without the tool") | ScriptedChatModel(responses=["fine"])
    chunks = list(callstream.openai.chunks(callstream.iter_callbacks(chain, "q"), tool_calls=True))
    assert not any(c.choices[0].delta.tool_calls for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_include_usage_ends_with_the_usage_chunk(face: str) -> None:
    # issue 11.6: usage as the model reported it, in a last chunk with empty choices, as the API does
    model = ScriptedChatModel(responses=["Hello there, friend"], chunk_size=5)
    if face == "sync":
        stream = callstream.iter_callbacks(model, "hi")
        chunks = sdk_chunks(b"".join(callstream.openai.sse(stream, include_usage=True)))
    else:
        astream = callstream.aiter_callbacks(model, "hi")
        stream = astream  # type: ignore[assignment]
        chunks = sdk_chunks(collect(face, callstream.openai.asse(astream, include_usage=True)))
    usage = stream.summary.usage
    assert usage is not None and usage["output_tokens"] == 4
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["total_tokens"],
        "completion_tokens_details": None,
        "prompt_tokens_details": None,
    }
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-2].choices[0].finish_reason == "stop"
    plain = list(callstream.openai.chunks(callstream.iter_callbacks(model, "hi")))
    assert plain[-1].choices[0].finish_reason == "stop" and all(c.usage is None for c in plain)


def test_chat_completion_usage_in_either_naming() -> None:
    lc = callstream.openai.chat_completion("x", usage={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7})
    oa = callstream.openai.chat_completion("x", usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    assert lc["usage"] == oa["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert callstream.openai.chat_completion("x")["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }


def test_text_mode_joins_a_split_pair_and_marks_a_lone_half() -> None:
    tokens = ["a\ud83d", "\ude00b", "\ud83d", "c", "\ude00", "d\ud83d"]
    raw = b"".join(sse(callstream.from_callback(lambda emit: [emit(t) for t in tokens]), text=True))
    events = decode(raw)
    assert "".join(d for n, d in events if n == "token") == "a😀b\ufffdc\ufffdd\ufffd"
    assert events[-1][0] == "done"


def test_json_modes_escape_what_a_transport_cannot_carry() -> None:
    tokens = ["a\ud83d", "\ude00", "\u2028\u2029\x85", "\x00"]
    raw = b"".join(ndjson(callstream.from_callback(lambda emit: [emit(t) for t in tokens])))
    assert b"\\ud83d" in raw and b"\\u2028" in raw and b"\\u0085" in raw and b"\\u0000" in raw
    lines = raw.decode().split("\n")  # UTF-8, and only \n ends a line
    assert [json.loads(line).get("text") for line in lines if line] == [*tokens, None]


def test_non_finite_floats_in_event_data_become_null() -> None:
    raw = b"".join(sse(callstream.from_callback(lambda emit: emit({"x": float("nan"), "y": [float("inf"), 1.5]}))))
    assert [json.loads(d) for n, d in decode(raw) if n == "item"] == [{"data": {"x": None, "y": [None, 1.5]}}]
