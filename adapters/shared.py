"""What the three reference apps share: the models, the chain, the agent, the page.

Configuration comes from the environment, so the same app runs under gunicorn
and uvicorn without flags:

- `CALLSTREAM_BASE_URL` / `CALLSTREAM_MODEL`: an OpenAI-compatible server
  (`OPENAI_API_KEY` is used when set); default: the embedded scripted model;
- `CALLSTREAM_DELAY`: seconds between scripted tokens (default 0.03);
- `CALLSTREAM_HEARTBEAT`: seconds of silence before a `: ping` (default 15);
- `CALLSTREAM_MAX_BODY`: the largest request body, in bytes (default 1 MiB).

What a request must look like, and the errors, are in `validation.py`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.messages import HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import tool

import callstream
import callstream.openai
from adapters import validation
from adapters.validation import ApiError, ChatRequest
from callstream.sse import format_sse
from callstream.testing import ScriptedChatModel, agent_script

logger = logging.getLogger("adapters")

HEARTBEAT = float(os.environ.get("CALLSTREAM_HEARTBEAT", "15"))
MODEL_NAME = os.environ.get("CALLSTREAM_MODEL", "callstream-scripted")
INDEX_HTML = (Path(__file__).parent / "index.html").read_text()

ANSWER = (
    "Streaming through callstream: a worker thread runs the chain, a sink carries "
    "its callbacks, and this page receives them as Server-Sent Events."
)


@tool
def get_weather(city: str) -> str:
    """Return the current weather for a city."""
    return f"18°C and sunny in {city}"


def _chat(respond: Any = None) -> Any:
    base_url = os.environ.get("CALLSTREAM_BASE_URL")
    if base_url:
        from langchain_openai import ChatOpenAI
        from pydantic import SecretStr

        key = os.environ.get("OPENAI_API_KEY", "not-needed")
        # stream_usage: ask for the usage chunk (`stream_options.include_usage`) that
        # langchain-openai leaves off for a base_url other than OpenAI's
        return ChatOpenAI(base_url=base_url, model=MODEL_NAME, api_key=SecretStr(key), max_retries=0, stream_usage=True)
    delay = float(os.environ.get("CALLSTREAM_DELAY", "0.03"))
    if respond is not None:
        return ScriptedChatModel(respond=respond, chunk_size=3, delay=delay)
    return ScriptedChatModel(responses=[ANSWER], chunk_size=3, delay=delay)


PROMPT = ChatPromptTemplate.from_messages([("system", "You are concise."), MessagesPlaceholder("messages")])


@cache
def chat_model() -> Any:
    return _chat()


@cache
def chain() -> Runnable[Any, Any]:
    """`prompt | model | parser`: the `/stream` route and the OpenAI-compatible one.

    Its input is `{"messages": [...]}`: a conversation, after the app's system prompt.
    """
    return PROMPT | chat_model() | StrOutputParser()


def chat_chain(model_kwargs: dict[str, Any]) -> Runnable[Any, Any]:
    """The chain, with a request's parameters (`temperature`, `max_tokens`...) bound to its model."""
    if not model_kwargs:
        return chain()
    return PROMPT | chat_model().bind(**model_kwargs) | StrOutputParser()


@cache
def agent() -> Runnable[Any, Any]:
    """A tool-using agent (`langchain.agents.create_agent`): the `/agent` route."""
    from langchain.agents import create_agent

    respond = agent_script(
        tool="get_weather", args={"city": "Paris"}, preamble="Let me check. ", answer="Right now it is {result}."
    )
    return create_agent(_chat(respond), tools=[get_weather])


@tool
def send_email(to: str, subject: str) -> str:
    """Send an email."""
    from langgraph.config import get_stream_writer

    get_stream_writer()({"progress": "sending"})  # a `custom` event on the page
    return f"email to {to} sent"


@cache
def approval_agent() -> Runnable[Any, Any]:
    """An agent whose `send_email` calls wait for a person (`HumanInTheLoopMiddleware`):
    the `/approval` routes. Its threads live in memory, in this process: behind several
    worker processes, use a shared checkpointer (Postgres, Redis) instead."""
    from langchain.agents import create_agent
    from langchain.agents.middleware import HumanInTheLoopMiddleware
    from langgraph.checkpoint.memory import InMemorySaver

    respond = agent_script(
        tool="send_email", args={"to": "team@example.com", "subject": "Hello"}, answer="Done: {result}."
    )
    hitl = HumanInTheLoopMiddleware(interrupt_on={"send_email": {"allowed_decisions": ["approve", "reject"]}})
    return create_agent(_chat(respond), tools=[send_email], middleware=[hitl], checkpointer=InMemorySaver())


def approval_thread(thread: str | None) -> RunnableConfig:
    """The run config for a conversation thread id sent by the page (`ApiError` 400 if malformed).

    The id is a bearer secret: check here that the caller owns it (a session, a
    user id) before starting or resuming its run.
    """
    return {"configurable": {"thread_id": validation.thread_id(thread)}}


def approval_input(q: str) -> dict[str, Any]:
    return {"messages": [("user", q or "Email the team hello.")]}


def decision(body: Any) -> Any:
    """`Command(resume=...)` for the page's decision (`{"decision": "approve" | "reject"}`);
    `ApiError` 400 for any other body."""
    from langgraph.types import Command

    if validation.decision(body) == "approve":
        return Command(resume={"decisions": [{"type": "approve"}]})
    return Command(resume={"decisions": [{"type": "reject", "message": "rejected on the page"}]})


class _Open:
    """How many streaming responses are open: a gauge for /health and dashboards."""

    count = 0


def tracked(body: Iterator[bytes]) -> Iterator[bytes]:
    """Count a sync response body as open until the server closes it."""
    _Open.count += 1
    try:
        yield from body
    finally:
        _Open.count -= 1
        close = getattr(body, "close", None)
        if close is not None:
            close()


async def atracked(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The async twin of `tracked`."""
    _Open.count += 1
    try:
        async for chunk in body:
            yield chunk
    finally:
        _Open.count -= 1
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()


def native_sse(q: str) -> Iterator[bytes]:
    """The baseline the benchmarks compare with: the chain's own `stream()`, framed
    as SSE by hand (no callstream: no cancellation, no heartbeat, no error event)."""
    for text in chain().stream(chain_input(q)):
        yield format_sse(json.dumps({"text": text}), event="token")
    yield format_sse('{"status": "completed"}', event="done")


async def anative_sse(q: str) -> AsyncIterator[bytes]:
    """The async baseline: the chain's own `astream()`."""
    async for text in chain().astream(chain_input(q)):
        yield format_sse(json.dumps({"text": text}), event="token")
    yield format_sse('{"status": "completed"}', event="done")


def health() -> dict[str, Any]:
    workers = sum(1 for t in threading.enumerate() if t.name.startswith("callstream-"))
    return {
        "status": "ok",
        "open_streams": _Open.count,
        "callstream_workers": workers,
        "threads": threading.active_count(),
    }


def chain_input(q: str) -> dict[str, Any]:
    return {"messages": [HumanMessage(q or "What is callstream?")]}


def agent_input(q: str) -> dict[str, Any]:
    return {"messages": [("user", q or "What's the weather in Paris?")]}


def completion_sse(req: ChatRequest) -> Iterator[bytes]:
    """`POST /v1/chat/completions` with `"stream": true`, for WSGI: the OpenAI wire format."""
    events = callstream.iter_callbacks(chat_chain(req.model_kwargs), {"messages": req.messages})
    wire = callstream.openai.sse(events, model=req.model, include_usage=req.include_usage, heartbeat=HEARTBEAT)
    return tracked(wire)


def acompletion_sse(req: ChatRequest) -> AsyncIterator[bytes]:
    """The async twin of `completion_sse`, for ASGI."""
    events = callstream.aiter_callbacks(chat_chain(req.model_kwargs), {"messages": req.messages})
    wire = callstream.openai.asse(events, model=req.model, include_usage=req.include_usage, heartbeat=HEARTBEAT)
    return atracked(wire)


def _usage(handler: UsageMetadataCallbackHandler) -> dict[str, int]:
    """The usage the model(s) reported, summed over the calls."""
    total: dict[str, int] = {}
    for usage in handler.usage_metadata.values():
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            value = usage.get(key)
            total[key] = total.get(key, 0) + (value if isinstance(value, int) else 0)
    return total


def _model_failed(exc: Exception) -> ApiError:
    logger.error("the chain failed", exc_info=exc)
    return ApiError(500, f"The model failed ({type(exc).__name__}).", code="model_error")


def completion(req: ChatRequest) -> dict[str, Any]:
    """`POST /v1/chat/completions` without streaming: a `chat.completion` with the model's usage."""
    usage = UsageMetadataCallbackHandler()
    config: RunnableConfig = {"callbacks": [usage]}
    try:
        text = chat_chain(req.model_kwargs).invoke({"messages": req.messages}, config)
    except Exception as exc:
        raise _model_failed(exc) from None
    return callstream.openai.chat_completion(text, model=req.model, usage=_usage(usage))


async def acompletion(req: ChatRequest) -> dict[str, Any]:
    """The async twin of `completion`."""
    usage = UsageMetadataCallbackHandler()
    config: RunnableConfig = {"callbacks": [usage]}
    try:
        text = await chat_chain(req.model_kwargs).ainvoke({"messages": req.messages}, config)
    except Exception as exc:
        raise _model_failed(exc) from None
    return callstream.openai.chat_completion(text, model=req.model, usage=_usage(usage))
