"""The reference apps under real servers, with real clients (httpx, openai, raw sockets, Chromium)."""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import openai
import pytest
from httpx_sse import connect_sse

from callstream.testing import OpenAIServer
from tests.helpers import dump_dom
from tests.web.servers import AppServer

_tags = itertools.count()


def tag() -> str:
    return f"web{next(_tags)}"


def sse_events(app: AppServer, path: str) -> tuple[httpx.Headers, list[tuple[str, Any]]]:
    with httpx.Client(timeout=20) as client, connect_sse(client, "GET", app.url + path) as source:
        headers = source.response.headers
        raw = [(e.event, e.data) for e in source.iter_sse()]
    try:
        return headers, [(name, json.loads(data)) for name, data in raw]
    except json.JSONDecodeError as exc:
        Path("/tmp/bad_sse.txt").write_text(repr(raw))
        raise AssertionError(f"{source.response.status_code} {headers}: {raw}") from exc


def wait_until(pred: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - t0


def test_stream_route_sse_frames_and_headers(app: AppServer) -> None:
    headers, events = sse_events(app, "/stream?q=hello")
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
    assert "content-length" not in headers
    tokens = [d["text"] for name, d in events if name == "token"]
    assert tokens == [f"w{i} " for i in range(20)]
    assert events[-1] == ("done", {"status": "completed"})


def test_agent_route_streams_tool_events(app: AppServer) -> None:
    _, events = sse_events(app, "/agent?q=weather")
    names = [name for name, _ in events]
    assert names.index("tool_start") < names.index("tool_end") < names.index("done")
    start = next(d for n, d in events if n == "tool_start")
    assert start["name"] == "get_weather" and start["input"] == {"city": "otters"}
    answer = "".join(d["text"] for n, d in events if n == "token")
    assert answer == "The answer is 18°C and sunny in otters."


def test_openai_client_against_the_app(app: AppServer) -> None:
    client = openai.OpenAI(base_url=app.url + "/v1", api_key="x", max_retries=0)
    messages: Any = [{"role": "user", "content": "hi"}]
    with client.chat.completions.create(model="m", messages=messages, stream=True) as stream:
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(f"w{i} " for i in range(20))
    assert chunks[-1].choices[0].finish_reason == "stop"
    reply = client.chat.completions.create(model="m", messages=messages)
    assert reply.choices[0].message.content == "".join(f"w{i} " for i in range(20))


def test_error_after_headers_is_an_error_event(app: AppServer) -> None:
    _, events = sse_events(app, "/stream?q=" + quote("[[fail_after=3]]"))
    assert [d["text"] for n, d in events if n == "token"] == ["w0 ", "w1 ", "w2 "]
    name, data = events[-1]
    assert name == "error" and data["type"] == "APIError"
    assert "Traceback" not in data["message"] and "scripted" not in data["message"]


def raw_get(app: AppServer, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("close", ["fin", "rst"])
def test_client_disconnect_cancels_run_and_upstream(app: AppServer, openai_server: OpenAIServer, close: str) -> None:
    # F45: read one event, leave; the run stops and the model's HTTP request is closed.
    t = tag()
    sock = raw_get(app, "/stream?q=" + quote(f"[[tokens=5000,delay_ms=2,tag={t}]]"))
    read_until(sock, b"event: token")
    t_close = time.monotonic()
    sent_at_close = openai_server.stats(t)[0]["sent"]
    if close == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    row = openai_server.wait_ended(t, timeout=10)[0]
    assert row["disconnected"] and not row["done"]
    # one heartbeat (0.2 s) + 2 token intervals + slack for the write that detects it
    assert row["t_end"] - t_close < 0.2 + 0.004 + 0.3
    assert row["sent"] - sent_at_close < 250


def test_silent_model_disconnect_found_by_heartbeat(app: AppServer) -> None:
    # F46: nothing to write for 5 s; the `: ping` every 0.2 s finds the gone client.
    if app.name == "flask-gunicorn-sync":
        pytest.skip("/health counts one worker of four")
    sock = raw_get(app, "/stream?q=" + quote(f"[[ttft_ms=5000,tag={tag()}]]"))
    read_until(sock, b": ping")
    assert app.health()["open_streams"] == 1
    sock.close()
    took = wait_until(lambda: app.health()["open_streams"] == 0, 2.0, "the stream to close")
    assert took < 0.6


def test_first_byte_long_before_upstream_is_done(app: AppServer, openai_server: OpenAIServer) -> None:
    # F47: the framework does not buffer: the first token arrives while > 90% is unsent.
    t = tag()
    with httpx.Client(timeout=20) as client:
        with connect_sse(client, "GET", app.url + "/stream?q=" + quote(f"[[tokens=300,delay_ms=5,tag={t}]]")) as src:
            for event in src.iter_sse():
                if event.event == "token":
                    sent = openai_server.stats(t)[0]["sent"]
                    break
    assert sent < 30


def test_fifty_concurrent_clients_get_their_own_streams(app: AppServer) -> None:
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            _, events = sse_events(app, "/stream?q=" + quote(f"[[prefix=c{i}_,tokens=15,delay_ms=2]]"))
            results[i] = [d["text"] for n, d in events if n == "token"]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for th in threads:
        th.start()
    health = httpx.get(app.url + "/health", timeout=10)  # not starved by 50 streams
    assert health.status_code == 200
    for th in threads:
        th.join(60)
    assert not errors, errors[:3]
    assert results == {i: [f"c{i}_{k} " for k in range(15)] for i in range(50)}


@pytest.mark.parametrize("app", ["fastapi-uvicorn"], indirect=True)
def test_page_renders_stream_in_headless_chromium(app: AppServer, tmp_path: Any) -> None:
    # The model says a few words before its tool call: the page takes them back on the `preamble` event.
    url = app.url + "/?autorun=1&agent=agent&q=" + quote("[[preamble=Let me check that for you.]] weather")
    dom, stderr = dump_dom(url, tmp_path)
    assert "done: completed" in dom, stderr[-2000:]
    assert "→ get_weather" in dom
    assert "The answer is 18°C and sunny in otters." in dom
    assert "Let me check" not in dom


def test_repeated_disconnects_leave_no_worker(app: AppServer) -> None:
    # F45 at CI size (benchmarks/web.py runs 1,000 per server): RST after the first token.
    if app.name == "flask-gunicorn-sync":
        pytest.skip("/health counts one worker of four")
    for _ in range(50):
        sock = raw_get(app, "/stream?q=" + quote("[[tokens=2000,delay_ms=1]]"))
        read_until(sock, b"event: token")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    wait_until(lambda: (h := app.health())["open_streams"] == 0 and h["callstream_workers"] == 0, 5.0, "workers to end")


def test_openai_client_gets_the_usage_the_model_reported(app: AppServer) -> None:
    # issue 11.6: usage as the upstream reported it (5 prompt tokens, one per chunk), with and without streaming
    client = openai.OpenAI(base_url=app.url + "/v1", api_key="x", max_retries=0)
    messages: Any = [{"role": "user", "content": "hi"}]
    reply = client.chat.completions.create(model="m", messages=messages)
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (5, 20, 25)
    with client.chat.completions.create(
        model="m", messages=messages, stream=True, stream_options={"include_usage": True}
    ) as stream:
        chunks = list(stream)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (5, 20, 25)
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    with client.chat.completions.create(model="m", messages=messages, stream=True) as stream:
        plain = list(stream)
    assert plain[-1].choices[0].finish_reason == "stop" and all(c.usage is None for c in plain)


def test_openai_route_takes_the_conversation_and_parameters(app: AppServer) -> None:
    # the whole conversation reaches the model: with a tool result in it, the upstream answers from it
    client = openai.OpenAI(base_url=app.url + "/v1", api_key="x", max_retries=0)
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    messages: Any = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "-3°C"},
    ]
    reply = client.chat.completions.create(
        model="m", messages=messages, temperature=0.2, top_p=0.9, max_tokens=50, stop=["zzz"], seed=1, user="u1", n=1
    )
    assert reply.choices[0].message.content == "The answer is -3°C."
    assert reply.model == "m"


WEIRD = "a\x00b\rc\r\nd\u2028e\u2029f\x85g\ndata: h\n\nevent: x</div>😀\ufeff"


@pytest.mark.parametrize("prefix", [WEIRD, "€" * 20_000], ids=["control-characters", "long-tokens"])
def test_any_token_text_reaches_the_openai_client(app: AppServer, prefix: str) -> None:
    # issue 12: what the model writes arrives unchanged, through the real openai client's stream parser
    client = openai.OpenAI(base_url=app.url + "/v1", api_key="x", max_retries=0)
    messages: Any = [{"role": "user", "content": f"[[prefix={prefix},tokens=3]]"}]
    with client.chat.completions.create(model="m", messages=messages, stream=True) as stream:
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(f"{prefix}{i} " for i in range(3))
    assert chunks[-1].choices[0].finish_reason == "stop"
    reply = client.chat.completions.create(model="m", messages=messages)
    assert reply.choices[0].message.content == "".join(f"{prefix}{i} " for i in range(3))


def test_any_token_text_reaches_an_sse_client(app: AppServer) -> None:
    _, events = sse_events(app, "/stream?q=" + quote(f"[[prefix={WEIRD},tokens=3]]"))
    assert "".join(d["text"] for n, d in events if n == "token") == "".join(f"{WEIRD}{i} " for i in range(3))
    assert events[-1] == ("done", {"status": "completed"})
