"""Real HTTP: the real `openai` client and `langchain-openai` against the local server."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import httpx
import openai
import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

import callstream
from callstream.testing import OpenAIServer
from tests.conftest import wait_for_no_workers
from tests.helpers import drain_into

_tags = itertools.count()


def model(server: OpenAIServer, **opts: Any) -> tuple[ChatOpenAI, str]:
    tag = f"t{next(_tags)}"
    spec = ",".join(f"{k}={v}" for k, v in {**opts, "tag": tag}.items())
    # A fresh async HTTP client per model: langchain-openai otherwise shares one
    # process-wide, whose pooled connections belong to the first event loop
    # (each test runs its own asyncio.run).
    chat = ChatOpenAI(
        base_url=server.base_url,
        api_key=SecretStr("test-key"),
        model=f"scripted:{spec}",
        max_retries=0,
        http_async_client=httpx.AsyncClient(),
    )
    return chat, tag


def test_chat_openai_streams_and_output_matches_invoke(openai_server: OpenAIServer, face: str) -> None:
    chat, tag = model(openai_server, tokens=30)
    chain = ChatPromptTemplate.from_template("{q}") | chat | StrOutputParser()
    stream: Any = (callstream.iter_callbacks if face == "sync" else callstream.aiter_callbacks)(chain, {"q": "hi"})
    if face == "sync":
        with stream as s:
            toks = list(s.tokens())
    else:

        async def go() -> list[str]:
            return [t async for t in stream.tokens()]

        toks = asyncio.run(go())
    assert toks == [f"w{i} " for i in range(30)]
    assert stream.output == chain.invoke({"q": "hi"})
    rows = openai_server.stats(tag)
    assert rows[0]["stream"] is True  # streamed over HTTP although streaming=True was never set
    assert rows[1]["stream"] is False  # the plain invoke did not


@pytest.mark.parametrize("how", ["break", "close", "timeout"])
def test_cancel_closes_the_http_response(openai_server: OpenAIServer, how: str) -> None:
    # F16: the server sees the client go away within a few chunks.
    chat, tag = model(openai_server, tokens=2000, delay_ms=2)
    stream = callstream.iter_callbacks(chat, "hi", timeout=0.15 if how == "timeout" else None)
    at_cancel = 0
    t_cancel = 0.0
    try:
        with stream as s:
            for i, _ in enumerate(s.tokens()):
                if i == 10 and how != "timeout":
                    t_cancel = time.monotonic()
                    at_cancel = openai_server.stats(tag)[0]["sent"]
                    if how == "close":
                        s.close()
                    break
    except callstream.StreamTimeout:
        t_cancel = time.monotonic()
        at_cancel = openai_server.stats(tag)[0]["sent"]
    row = openai_server.wait_ended(tag)[0]
    assert row["disconnected"] and not row["done"]
    assert row["sent"] - at_cancel < 25
    assert row["t_end"] - t_cancel < 0.25


def test_disconnect_latency_after_break(openai_server: OpenAIServer) -> None:
    # The figure: break -> server write failure, p99 over repeated runs.
    lat: list[float] = []
    after: list[int] = []
    for _ in range(20):
        chat, tag = model(openai_server, tokens=2000, delay_ms=2)
        with callstream.iter_callbacks(chat, "hi") as s:
            for i, _ in enumerate(s.tokens()):
                if i == 5:
                    t_break = time.monotonic()
                    sent = openai_server.stats(tag)[0]["sent"]
                    break
        row = openai_server.wait_ended(tag)[0]
        assert row["disconnected"]
        lat.append(row["t_end"] - t_break)
        after.append(row["sent"] - sent)
    assert max(after) < 25, after
    assert max(lat) < 0.05, sorted(lat)  # 20 samples: the max bounds p95


def test_mid_stream_failure_reaches_consumer_after_tokens(openai_server: OpenAIServer) -> None:
    chat, _ = model(openai_server, tokens=30, fail_after=5)
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for t in callstream.iter_callbacks(chat, "hi").tokens():
            got.append(t)
    assert got == [f"w{i} " for i in range(5)]
    assert "scripted mid-stream failure" in str(info.value)


@pytest.mark.parametrize("status", [401, 500])
def test_failure_before_first_token_is_prompt(openai_server: OpenAIServer, status: int) -> None:
    # F02: raised on the first next(), within 1 s, with no first-token timeout to wait for.
    chat, _ = model(openai_server, status=status)
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        with callstream.iter_callbacks(chat, "hi", first_token_timeout=30) as s:
            next(s)
            for _ in s:
                pass
    assert info.value.status_code == status
    assert time.monotonic() - t0 < 1


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def test_create_agent_over_http_with_tool_calls(openai_server: OpenAIServer, face: str) -> None:
    from langchain.agents import create_agent

    chat, tag = model(openai_server)
    agent = create_agent(chat, tools=[multiply])
    inputs = {"messages": [("user", "what is 2 times 2?")]}
    stream = (callstream.iter_callbacks if face == "sync" else callstream.aiter_callbacks)(agent, inputs)
    events: list[Any] = []
    drain_into(face, stream, events)
    assert [e.kind for e in events if e.kind == "llm_start"] == ["llm_start", "llm_start"]
    assert ("tool_end", "multiply") in [(e.kind, e.name) for e in events]
    assert "".join(e.text for e in events if e.kind == "token") == "The answer is 4."
    assert stream.output["messages"][-1].content == "The answer is 4."
    assert len(openai_server.stats(tag)) == 2


def test_raw_openai_sdk_through_from_callback(openai_server: OpenAIServer) -> None:
    # The generic bridge over the SDK's own stream; `with` closes the response
    # (the SDK's Stream sits in a reference cycle, so GC alone is late).
    client = openai.OpenAI(base_url=openai_server.base_url, api_key="k", max_retries=0)
    tag = f"raw{next(_tags)}"

    def producer(emit: Any) -> None:
        with client.chat.completions.create(
            model=f"scripted:tokens=2000,delay_ms=2,tag={tag}",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        ) as sdk_stream:
            for chunk in sdk_stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    emit(chunk.choices[0].delta.content)

    with callstream.from_callback(producer) as s:
        for i, _ in enumerate(s):
            if i == 5:
                sent = openai_server.stats(tag)[0]["sent"]
                break
    row = openai_server.wait_ended(tag)[0]
    assert row["disconnected"] and row["sent"] - sent < 25


def test_community_llamafile_llm_over_http(openai_server: OpenAIServer) -> None:
    # A langchain-community client of another real protocol (llama.cpp's /completion).
    from langchain_community.llms import Llamafile

    tag = f"ll{next(_tags)}"
    llm = Llamafile(base_url=openai_server.base_url.replace("/v1", f"/llama/tokens=8,tag={tag}"), streaming=True)
    chain = ChatPromptTemplate.from_template("{q}") | llm
    with callstream.iter_callbacks(chain, {"q": "hi"}) as s:
        toks = list(s.tokens())
    assert toks == [f"w{i} " for i in range(8)]
    assert s.output == "".join(toks)


def test_no_upstream_retry_after_cancel_in_flight(openai_server: OpenAIServer) -> None:
    # F17: cancel while the request waits for its first byte: no second request,
    # no token emitted; the worker ends when the read returns.
    chat, tag = model(openai_server, tokens=50, ttft_ms=300)
    chat.max_retries = 2
    with callstream.iter_callbacks(chat, "hi") as s:
        first = next(s)
        assert first.kind == "llm_start"
    openai_server.wait_ended(tag)
    wait_for_no_workers()  # the worker has ended: no retry can send a request any more
    rows = openai_server.stats(tag)
    assert len(rows) == 1
    assert s.text == ""


def test_with_retry_and_fallbacks_over_http_make_no_new_request(openai_server: OpenAIServer) -> None:
    # F18 over HTTP: 0 new requests after cancel.
    primary, tag = model(openai_server, tokens=2000, delay_ms=2)
    backup, backup_tag = model(openai_server, tokens=5)
    chain = primary.with_retry(stop_after_attempt=3).with_fallbacks([backup])
    starts = 0
    with callstream.iter_callbacks(chain, "hi") as s:
        for e in s:
            starts += e.kind == "llm_start"
            if e.kind == "token" and e.text:
                break
    openai_server.wait_ended(tag)
    wait_for_no_workers()  # the worker has ended: no retry can send a request any more
    assert len(openai_server.stats(tag)) == 1 and openai_server.stats(backup_tag) == []
    assert starts == 1


def test_answer_only_and_summary_over_http(openai_server: OpenAIServer, face: str) -> None:
    # Issue 7 against the server's tool-calling mode (text streams after the tool result).
    from langchain.agents import create_agent

    chat, tag = model(openai_server)
    agent = create_agent(chat, tools=[multiply])
    inputs = {"messages": [("user", "2 times 2?")]}
    fn = callstream.iter_callbacks if face == "sync" else callstream.aiter_callbacks
    stream: Any = fn(agent, inputs)  # the face decides which
    if face == "sync":
        text = "".join(stream.tokens(answer_only=True))
    else:

        async def go() -> str:
            return "".join([t async for t in stream.tokens(answer_only=True)])

        text = asyncio.run(go())
    assert text == "The answer is 4."
    s = stream.summary
    assert s.status == "completed" and s.llm_calls == 2
    assert [(t.name, t.args) for t in s.tool_calls] == [("multiply", {"a": 2, "b": 2})]
    assert len(openai_server.stats(tag)) == 2
