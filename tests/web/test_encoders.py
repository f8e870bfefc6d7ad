"""The web encoders without a server: frames, heartbeats, errors, OpenAI chunks."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from httpx_sse._decoders import SSEDecoder

import callstream
import callstream.openai
from callstream.sse import _LINE_SEP, andjson, asse, ndjson, sse
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
    assert b"id: 1\n" in raw and b"id: 4\n" in raw


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
    body.close()  # what a WSGI server does when the client leaves
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
    assert calls[0].function.name == "add" and calls[0].id == "call_add"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"a": 1}
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
