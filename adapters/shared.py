"""What the three reference apps share: the models, the chain, the agent, the page.

Configuration comes from the environment, so the same app runs under gunicorn
and uvicorn without flags:

- `CALLSTREAM_BASE_URL` / `CALLSTREAM_MODEL`: an OpenAI-compatible server
  (`OPENAI_API_KEY` is used when set); default: the embedded scripted model;
- `CALLSTREAM_DELAY`: seconds between scripted tokens (default 0.03);
- `CALLSTREAM_HEARTBEAT`: seconds of silence before a `: ping` (default 15);
- `CALLSTREAM_MAX_BODY`: the largest request body, in bytes (default 1 MiB);
- `CALLSTREAM_MAX_RUNS`: the most runs this process keeps for `/runs` (default 1000; one
  more is a 429), each kept `CALLSTREAM_RUN_TTL` seconds after it ends (default 3600).

The `/runs` routes publish a run on a relay and let any number of clients read it
from any position: `POST /runs` starts one and returns its key, `GET
/runs/{key}/stream` streams it (resuming after the `Last-Event-ID` a browser's
`EventSource` sends when it reconnects), `POST /runs/{key}/cancel` stops it.
By default the relay is a `callstream.MemoryRelay`: it serves one process, so
under several worker processes (gunicorn `-w 4`) a key is known only to the
worker that started the run. Set `CALLSTREAM_REDIS_URL` (`redis://host:6379/0`)
for a `callstream.redis.RedisRelay`, shared by every process and machine, and
`CALLSTREAM_CELERY=1` as well to run the runs in a Celery worker
(`adapters/celery/worker.py`) instead of the web process.

What a request must look like, and the errors, are in `validation.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
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
from callstream.errors import short_key
from callstream.sse import asse, default_error_message, format_sse, sse
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
    """How many streaming responses are open: a gauge for /health and dashboards.

    Updated under a lock: gunicorn's gthread workers open and close responses
    from many threads at once (`count += 1` is a read and a write)."""

    count = 0
    lock = threading.Lock()

    @classmethod
    def add(cls, n: int) -> None:
        with cls.lock:
            cls.count += n


def tracked(body: Iterator[bytes]) -> Iterator[bytes]:
    """Count a sync response body as open until the server closes it."""
    _Open.add(1)
    try:
        yield from body
    finally:
        _Open.add(-1)
        close = getattr(body, "close", None)
        if close is not None:
            close()


async def atracked(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The async twin of `tracked`."""
    _Open.add(1)
    try:
        async for chunk in body:
            yield chunk
    finally:
        _Open.add(-1)
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()


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


# -- runs on a relay: POST /runs, GET /runs/{key}/stream, POST /runs/{key}/cancel ------------

MAX_RUNS = int(os.environ.get("CALLSTREAM_MAX_RUNS", "1000"))
RUN_TTL = float(os.environ.get("CALLSTREAM_RUN_TTL", "3600"))
#: `retry:` sent first on a run's stream: how soon a browser's `EventSource` reconnects
#: after a dropped connection, in milliseconds (its own default is about 3 s).
RECONNECT_MS = int(os.environ.get("CALLSTREAM_RECONNECT_MS", "1000"))


REDIS_URL = os.environ.get("CALLSTREAM_REDIS_URL")
#: `POST /runs` enqueues a Celery task (`adapters/celery/worker.py`) rather than running here
CELERY = os.environ.get("CALLSTREAM_CELERY", "") not in ("", "0")
LEASE = float(os.environ.get("CALLSTREAM_LEASE", "3"))


@cache
def relay() -> Any:
    """This process's relay: the runs of `/runs`, kept `RUN_TTL` seconds after they end.

    A `MemoryRelay` (this process only), or a `RedisRelay` on `CALLSTREAM_REDIS_URL`
    (every process). A run goes on when its client leaves (`linger=None`), so a
    reconnect resumes it; `POST /runs/{key}/cancel` stops it.
    """
    if REDIS_URL:
        from callstream.redis import RedisRelay

        return RedisRelay(REDIS_URL, max_runs=MAX_RUNS, ttl=RUN_TTL, lease=LEASE)
    if CELERY:
        raise RuntimeError("CALLSTREAM_CELERY needs CALLSTREAM_REDIS_URL: the worker publishes on Redis")
    return callstream.MemoryRelay(max_runs=MAX_RUNS, ttl=RUN_TTL)


def authorize(key: str, action: str) -> None:
    """Where an ownership check plugs in: may this caller `"stream"` or `"cancel"` run `key`?

    A key is a bearer secret (128 random bits, never logged in full): here, whoever
    holds it may read and cancel the run. To tie runs to users, record the owner
    when `POST /runs` starts one (the session's user id beside the key) and raise
    `ApiError(404, ...)` here when the caller is someone else: a 404, not a 403, so
    that a stranger learns nothing about which keys exist.

    Where it runs: in a worker thread under WSGI and in Django's views (ASGI
    too), but on the event loop in the FastAPI app: there, a lookup must not
    block (await it in the endpoint instead).
    """


def stream_key(key: str) -> str:
    """The key of `GET /runs/{key}/stream`, checked (`ApiError` 404) and authorized."""
    key = validation.run_key(key)
    authorize(key, "stream")
    return key


def run_input(req: validation.RunRequest) -> tuple[Runnable[Any, Any], Any, Any]:
    """The runnable, its input and its config for a `POST /runs` body."""
    if req.agent == "chain":
        return chain(), chain_input(req.q), None
    if req.agent == "agent":
        return agent(), agent_input(req.q), None
    config = approval_thread(req.thread)
    if req.decision is not None:  # a paused thread resumed: a new run, with its own key
        return approval_agent(), decision({"decision": req.decision}), config
    return approval_agent(), approval_input(req.q), config


def _started(key: str) -> dict[str, Any]:
    logger.info("run %s started", short_key(key))
    return {
        "key": key,
        "status": relay().status(key),
        "stream": f"/runs/{key}/stream",
        "cancel": f"/runs/{key}/cancel",
    }


def _too_many(exc: callstream.RelayFull) -> ApiError:
    return ApiError(429, f"Too many runs: {exc}", code="too_many_runs")


def start_run(req: validation.RunRequest) -> dict[str, Any]:
    """`POST /runs`: publish the run (it goes on in a worker thread) and return its key (429 when full).

    With `CALLSTREAM_CELERY`: reserve the key, hand it to a Celery worker, return at once
    (the run is `queued` until a worker starts it; its subscribers wait for it).
    """
    try:
        if CELERY:
            from adapters.celery.worker import enqueue

            key = relay().reserve()
            enqueue(key, req)
        else:
            runnable, inputs, config = run_input(req)
            key = relay().publish(callstream.iter_callbacks(runnable, inputs, config))
    except callstream.RelayFull as exc:
        raise _too_many(exc) from None
    return _started(key)


async def astart_run(req: validation.RunRequest) -> dict[str, Any]:
    """The async twin of `start_run`: the run is a task on the server's event loop
    (with `CALLSTREAM_CELERY`, the enqueue runs in a thread: Celery's client blocks)."""
    if CELERY:
        return await asyncio.to_thread(start_run, req)
    runnable, inputs, config = run_input(req)
    try:
        key = await relay().apublish(callstream.aiter_callbacks(runnable, inputs, config))
    except callstream.RelayFull as exc:
        raise _too_many(exc) from None
    return _started(key)


def _unknown_run(key: str) -> ApiError:
    if REDIS_URL:
        return ApiError(404, f"No run {short_key(key)!r}: never started, or expired.", code="run_not_found")
    return ApiError(
        404,
        f"No run {short_key(key)!r} in this process. Runs are kept in the memory of the worker process "
        "that started them (callstream.MemoryRelay): a run started by another worker process, or before "
        "a restart, is unknown here. To share runs across processes, use callstream.redis.RedisRelay.",
        code="run_not_found",
    )


def _retry() -> bytes:
    return f"retry: {RECONNECT_MS}\n\n".encode()


def _gap_message(exc: BaseException) -> str:
    """What a client is told: for a `StreamGap`, that the events after its last one are gone."""
    if isinstance(exc, callstream.StreamGap):
        return f"The events after the last one received are gone: {exc}."
    return default_error_message(exc)


def _gone(exc: callstream.StreamGap) -> bytes:
    """The answer to a stale or malformed `Last-Event-ID`: a 200 with one `error` event (an
    `EventSource` drops a non-200 answer without telling the page), never a silent restart."""
    return format_sse(json.dumps({"type": "StreamGap", "message": _gap_message(exc)}), event="error")


def _subscribe(key: str, last_event_id: str | None, subscribe: Any) -> Any:
    """`relay().subscribe` or `asubscribe` for `GET /runs/{key}/stream`: the subscription, or the
    bytes of the error event when `Last-Event-ID` cannot be resumed; `ApiError` 404 for no such run."""
    try:
        return subscribe(key, after=last_event_id or None)
    except callstream.StreamNotFound:
        raise _unknown_run(key) from None
    except callstream.StreamGap as exc:
        return _retry() + _gone(exc)


def run_sse(key: str, last_event_id: str | None) -> Iterator[bytes]:
    """`GET /runs/{key}/stream` for WSGI: the run's events from after `Last-Event-ID`, each with its `id:`."""
    key = stream_key(key)
    sub = _subscribe(key, last_event_id, relay().subscribe)
    if isinstance(sub, bytes):
        return iter([sub])
    return tracked(_then(_retry(), sse(sub, heartbeat=HEARTBEAT, error_message=_gap_message)))


async def arun_sse(key: str, last_event_id: str | None) -> AsyncIterator[bytes]:
    """The async twin of `run_sse`, for ASGI, awaited on the server's loop; `key` from `stream_key`.

    A `RedisRelay`'s `asubscribe` never blocks the loop: it checks the key and
    `Last-Event-ID` at its first read. So the key is looked up here, awaited
    (a 404 before any byte), and a stale id becomes the same `error` event
    when the body starts.
    """
    if await relay().astatus(key) is None:
        raise _unknown_run(key)
    sub = _subscribe(key, last_event_id, relay().asubscribe)
    if isinstance(sub, bytes):
        return _aone(sub)
    return atracked(_athen(_retry(), asse(sub, heartbeat=HEARTBEAT, error_message=_gap_message)))


def _then(first: bytes, body: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield first
        yield from body
    finally:
        getattr(body, "close", lambda: None)()


async def _athen(first: bytes, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in body:
            yield chunk
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()


async def _aone(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


def cancel_run(key: str) -> dict[str, Any]:
    """`POST /runs/{key}/cancel`: stop the run at its next callback (idempotent); 404 for no such run."""
    key = validation.run_key(key)
    authorize(key, "cancel")
    try:
        relay().cancel(key)
    except callstream.StreamNotFound:
        raise _unknown_run(key) from None
    logger.info("run %s cancelled", short_key(key))
    return {"status": relay().status(key)}


_RUN_PATH = re.compile(r"(/runs/[A-Za-z0-9_-]{6})[A-Za-z0-9_-]+")


class RedactRunKeys(logging.Filter):
    """Shorten run keys in access-log lines (`/runs/abcdef…/stream`): a key is a bearer secret.

    Installed on uvicorn's and gunicorn's access loggers below; add it to any other
    logger that writes request paths.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact(v) for k, v in record.args.items()}
        record.msg = _redact(record.msg)
        return True


def _redact(value: Any) -> Any:
    return _RUN_PATH.sub(r"\1…", value) if isinstance(value, str) else value


for _name in ("uvicorn.access", "gunicorn.access"):
    logging.getLogger(_name).addFilter(RedactRunKeys())
