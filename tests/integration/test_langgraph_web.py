"""Interrupts on the wire: SSE and NDJSON carry them; the OpenAI-shaped stream ends with `finish_reason: "interrupt"`.

The OpenAI wire format is served by a real HTTP server (stdlib, in a thread) and read by the real `openai` client.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from langgraph.types import Command

import callstream
import callstream.openai
from callstream.sse import andjson, asse, ndjson, sse
from tests.unit.test_langgraph import QUESTION, hitl_agent, thread
from tests.web.test_encoders import decode


def body(face: str, encode: tuple[Any, Any], runnable: Any, input: Any, config: Any) -> bytes:
    if face == "sync":
        return b"".join(encode[0](callstream.iter_callbacks(runnable, input, config)))

    async def go() -> bytes:
        return b"".join([c async for c in encode[1](callstream.aiter_callbacks(runnable, input, config))])

    return asyncio.run(go())


def frames(fmt: str, raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    if fmt == "sse":
        return [(name, json.loads(data)) for name, data in decode(raw)]
    rows = [json.loads(line) for line in raw.decode().splitlines() if line]
    return [(row.pop("event"), row) for row in rows]


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
def test_sse_and_ndjson_carry_the_interrupt_then_the_resumed_run(face: str, fmt: str) -> None:
    encode = (sse, asse) if fmt == "sse" else (ndjson, andjson)
    agent = hitl_agent()
    got = frames(fmt, body(face, encode, agent, QUESTION, thread("w")))
    names = [name for name, _ in got]
    assert names[-2:] == ["interrupt", "done"] and got[-1][1] == {"status": "interrupted"}
    assert "tool_start" not in names and "error" not in names
    paused = got[-2][1]
    (asked,) = paused["interrupts"]
    assert asked["value"]["action_requests"][0] == {
        "name": "send_email",
        "args": {"to": "bob", "body": "hi"},
        "description": "Tool execution requires approval\n\nTool: send_email\nArgs: {'to': 'bob', 'body': 'hi'}",
    }
    assert asked["id"] == agent.get_state(thread("w")).interrupts[0].id
    assert asked["node"] == "HumanInTheLoopMiddleware.after_model" and paused["name"] == "LangGraph"
    assert paused["checkpoint_id"] == agent.get_state(thread("w")).config["configurable"]["checkpoint_id"]

    # the decision a page posts back resumes the same thread
    resume: Command[Any] = Command(resume={"decisions": [{"type": "approve"}]})
    got = frames(fmt, body(face, encode, agent, resume, thread("w")))
    names = [name for name, _ in got]
    assert names.index("tool_start") < names.index("custom") < names.index("tool_end")
    assert [d["data"]["progress"] for n, d in got if n == "custom"] == ["connecting for bob", "sent"]
    assert "".join(d["text"] for n, d in got if n == "token") == "Done: email sent to bob"
    assert got[-1] == ("done", {"status": "completed"}) and "interrupt" not in names


def test_kinds_can_leave_the_interrupt_out_and_done_still_says_interrupted() -> None:
    raw = b"".join(sse(callstream.iter_callbacks(hitl_agent(), QUESTION, thread("k")), kinds=["token"]))
    got = frames("sse", raw)
    assert "interrupt" not in [n for n, _ in got] and got[-1] == ("done", {"status": "interrupted"})


def test_openai_chunks_end_with_finish_reason_interrupt(face: str) -> None:
    agent = hitl_agent()
    if face == "sync":
        chunks = list(callstream.openai.chunks(callstream.iter_callbacks(agent, QUESTION, thread("c"))))
    else:

        async def go() -> list[Any]:
            stream = callstream.aiter_callbacks(agent, QUESTION, thread("c"))
            return [c async for c in callstream.openai.achunks(stream)]

        chunks = asyncio.run(go())
    last = chunks[-1].choices[0]
    # "interrupt" is callstream's finish_reason, outside the SDK's Literal
    assert last.finish_reason == "interrupt" and last.delta.content is None  # type: ignore[comparison-overlap]
    pause = last.model_extra["interrupt"]
    assert pause["interrupts"][0]["id"] == agent.get_state(thread("c")).interrupts[0].id
    assert pause["interrupts"][0]["value"]["action_requests"][0]["name"] == "send_email"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Let me send it. "
    # a run that did not pause ends as before
    done = list(
        callstream.openai.chunks(
            callstream.iter_callbacks(agent, Command(resume={"decisions": [{"type": "approve"}]}), thread("c"))
        )
    )
    assert done[-1].choices[0].finish_reason == "stop" and not done[-1].choices[0].model_extra


# -- the OpenAI wire format, served over HTTP, read by the real openai client ------------------


class _Endpoint(BaseHTTPRequestHandler):
    """`POST /v1/chat/completions` streaming the HITL agent; `extra_body` carries the thread and a resume value."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        config = thread(request["thread_id"])
        if "resume" in request:
            input: Any = Command(resume=request["resume"])
        else:
            input = {"messages": [{"role": m["role"], "content": m["content"]} for m in request["messages"]]}
        stream = callstream.iter_callbacks(self.server.agent, input, config)
        self.send_response(200)
        for key, value in callstream.sse.SSE_HEADERS.items():
            self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for frame in callstream.openai.sse(stream, model=request["model"]):
            self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Endpoint)
        self.agent = hitl_agent()


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = _Server()
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    serving.join(5)


def test_real_openai_client_sees_the_interrupt_and_resumes(endpoint: str) -> None:
    client = openai.OpenAI(base_url=endpoint, api_key="x", max_retries=0)
    messages: Any = [{"role": "user", "content": "Email Bob hi"}]
    with client.chat.completions.create(
        model="hitl", messages=messages, stream=True, extra_body={"thread_id": "o"}
    ) as stream:
        chunks = list(stream)
    last = chunks[-1].choices[0]
    assert last.finish_reason == "interrupt"  # type: ignore[comparison-overlap]  # callstream's, not in the SDK's Literal
    (asked,) = last.model_extra["interrupt"]["interrupts"]
    assert asked["value"]["review_configs"][0]["allowed_decisions"] == ["approve", "edit", "reject", "respond"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Let me send it. "

    decision = {
        "decisions": [{"type": "edit", "edited_action": {"name": "send_email", "args": {"to": "eve", "body": "x"}}}]
    }
    with client.chat.completions.create(
        model="hitl", messages=messages, stream=True, extra_body={"thread_id": "o", "resume": decision}
    ) as stream:
        chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks).endswith("email sent to eve")
