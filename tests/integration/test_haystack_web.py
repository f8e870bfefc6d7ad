"""A Haystack stream served by FastAPI under a real uvicorn on 127.0.0.1: the docs app, and
a client that leaves mid-stream (the model's HTTP request is closed)."""

from __future__ import annotations

import os

os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"

import importlib.util
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from haystack.components.agents import Agent
from haystack.components.generators.chat import OpenAIChatGenerator
from haystack.dataclasses import ChatMessage
from haystack.utils import Secret

from callstream.haystack import aiter_run
from callstream.sse import SSE_HEADERS, asse
from tests.integration.test_haystack import WEATHER

ROOT = Path(__file__).resolve().parents[2]


def load_docs_app() -> FastAPI:
    spec = importlib.util.spec_from_file_location(
        "haystack_fastapi_example", ROOT / "docs/examples/haystack_fastapi.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def upstream_app(base_url: str) -> FastAPI:
    app = FastAPI()

    @app.get("/agent")
    async def agent(spec: str) -> StreamingResponse:
        llm = OpenAIChatGenerator(
            api_key=Secret.from_token("test-key"), model=f"scripted:{spec}", api_base_url=base_url, max_retries=0
        )
        events = aiter_run(Agent(chat_generator=llm, tools=[WEATHER]), {"messages": [ChatMessage.from_user("hi")]})
        return StreamingResponse(asse(events, heartbeat=1), headers=dict(SSE_HEADERS))

    @app.get("/tokens")
    async def tokens(spec: str) -> StreamingResponse:
        llm = OpenAIChatGenerator(
            api_key=Secret.from_token("test-key"), model=f"scripted:{spec}", api_base_url=base_url, max_retries=0
        )
        events = aiter_run(llm, {"messages": [ChatMessage.from_user("hi")]})
        return StreamingResponse(asse(events, heartbeat=1), headers=dict(SSE_HEADERS))

    return app


class Served:
    def __init__(self, app: FastAPI) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.thread.start()
        end = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < end, "uvicorn did not start"
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def served(openai_server: Any) -> Iterator[tuple[Served, Served]]:
    docs, upstream = Served(load_docs_app()), Served(upstream_app(openai_server.base_url))
    yield docs, upstream
    docs.stop()
    upstream.stop()


def events_of(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    name = ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            yield name, json.loads(line[5:].strip())


def test_docs_app_streams_a_haystack_agent(served: tuple[Served, Served]) -> None:
    docs, _ = served
    with httpx.stream("GET", f"{docs.url}/chat", params={"q": "hello"}, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        got = list(events_of(response))
    assert "".join(p["text"] for n, p in got if n == "token") == "Streamed by Haystack and FastAPI."
    assert got[-1] == ("done", {"status": "completed"})


def test_agent_tool_events_over_sse(served: tuple[Served, Served]) -> None:
    _, upstream = served
    with httpx.stream("GET", f"{upstream.url}/agent", params={"spec": "tag=web-agent"}, timeout=10) as response:
        got = list(events_of(response))
    assert [n for n, _ in got] == ["tool_start", "tool_end"] + ["token"] * 6 + ["done"]
    assert got[0][1]["name"] == "get_weather" and got[1][1]["output"] == "18C in otters"


def test_client_leaving_closes_the_models_request(served: tuple[Served, Served], openai_server: Any) -> None:
    _, upstream = served
    name = f"web-leave-{time.monotonic_ns()}"
    spec = f"tokens=5000,delay_ms=2,tag={name}"
    with httpx.stream("GET", f"{upstream.url}/tokens", params={"spec": spec}, timeout=10) as response:
        for n, _ in events_of(response):
            if n == "token":
                break
    (row,) = openai_server.wait_ended(name, timeout=5)
    assert row["disconnected"] and row["sent"] < 5000, row
