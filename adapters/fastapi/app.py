"""FastAPI reference app: `uvicorn adapters.fastapi.app:app` (from the repo root).

Streams with the async face (`aiter_callbacks`): Starlette would run a sync
iterator one `next()` per worker thread and never close it on disconnect.
Every error is JSON (`adapters/validation.py`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

import callstream
from adapters import shared, validation
from adapters.validation import ApiError
from callstream.sse import SSE_HEADERS, asse


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Start-up made its objects: keep the cycle collector's full passes off them (docs/performance.md).
    gc.collect()
    gc.freeze()
    yield


# no redirect from `/path/` to `/path`: a 404, as in the other apps
app = FastAPI(title="callstream reference app", redirect_slashes=False, lifespan=lifespan)
GET = ["GET", "HEAD"]  # HEAD with GET, as Flask and Starlette's own routes do
logger = logging.getLogger("adapters.fastapi")


def _error(err: ApiError) -> Response:
    return Response(err.json(), status_code=err.status, headers=err.headers, media_type="application/json")


@app.exception_handler(ApiError)
async def api_error(request: Request, err: ApiError) -> Response:
    return _error(err)


@app.exception_handler(HTTPException)
async def http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own errors (404, 405) in the same JSON shape."""
    if exc.status_code == 404:
        return _error(validation.not_found(request.method, request.url.path))
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "").split(", ")
        return _error(validation.method_not_allowed(request.method, allowed))
    return _error(ApiError(exc.status_code, str(exc.detail)))


@app.exception_handler(RequestValidationError)
async def query_error(request: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0] if exc.errors() else {}
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return _error(ApiError(400, f"Invalid request: {first.get('msg', 'bad parameter')}.", param=param))


@app.exception_handler(Exception)
async def crash(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error", exc_info=exc)  # the client gets no traceback, the log does
    return _error(validation.server_error())


@app.api_route("/", methods=GET, response_class=HTMLResponse)
async def index() -> str:
    return shared.INDEX_HTML


@app.api_route("/health", methods=GET)
def health() -> dict[str, Any]:  # sync on purpose: it must not starve behind streams
    return shared.health()


def _sse(request: Request, body: Callable[[], AsyncIterator[bytes]]) -> Response:
    """An SSE response; for HEAD the headers only (Starlette would run the stream to drop its bytes)."""
    if request.method == "HEAD":
        return Response(headers=dict(SSE_HEADERS))
    return StreamingResponse(body(), headers=dict(SSE_HEADERS))


@app.api_route("/stream", methods=GET)
async def stream(request: Request, q: str = "") -> Response:
    def body() -> AsyncIterator[bytes]:
        events = callstream.aiter_callbacks(shared.chain(), shared.chain_input(q))
        return shared.atracked(asse(events, heartbeat=shared.HEARTBEAT))

    return _sse(request, body)


@app.api_route("/agent", methods=GET)
async def agent(request: Request, q: str = "") -> Response:
    def body() -> AsyncIterator[bytes]:
        events = callstream.aiter_callbacks(shared.agent(), shared.agent_input(q))
        return shared.atracked(asse(events, heartbeat=shared.HEARTBEAT))

    return _sse(request, body)


async def _read_body(request: Request) -> bytes:
    body = validation.Body()
    try:
        async for chunk in request.stream():
            body.add(chunk)
    except ApiError:
        raise
    except Exception as exc:  # the client left or sent less than it announced
        raise validation.unreadable() from exc
    return body.bytes()


@app.api_route("/approval", methods=GET)
async def approval(request: Request, q: str = "", thread: str | None = None) -> Response:
    """The agent that asks before it sends an email: SSE ending with `interrupt`, then `done`."""
    config = shared.approval_thread(thread)

    def body() -> AsyncIterator[bytes]:
        events = callstream.aiter_callbacks(shared.approval_agent(), shared.approval_input(q), config)
        return shared.atracked(asse(events, heartbeat=shared.HEARTBEAT))

    return _sse(request, body)


@app.post("/approval/{thread}/decision")
async def approval_decision(thread: str, request: Request) -> Response:
    """The page's decision: the same thread resumed with `Command(resume=...)`, as SSE."""
    config = shared.approval_thread(thread)
    validation.check_content_type(request.headers.get("Content-Type"))
    validation.check_length(request.headers.get("Content-Length"))
    resume = shared.decision(validation.parse_json(await _read_body(request)))
    events = callstream.aiter_callbacks(shared.approval_agent(), resume, config)
    return StreamingResponse(shared.atracked(asse(events, heartbeat=shared.HEARTBEAT)), headers=dict(SSE_HEADERS))


async def _json_body(request: Request) -> object:
    validation.check_content_type(request.headers.get("Content-Type"))
    validation.check_length(request.headers.get("Content-Length"))
    return validation.parse_json(await _read_body(request))


@app.post("/runs")
async def start_run(request: Request) -> Response:
    """Start a run on this process's relay (a task on this loop); answers its key."""
    started = await shared.astart_run(validation.run_request(await _json_body(request)))
    return Response(json.dumps(started), status_code=202, media_type="application/json")


@app.api_route("/runs/{key}/stream", methods=GET)
async def run_stream(request: Request, key: str) -> Response:
    """The run's events, resumed after `Last-Event-ID` when the browser reconnects."""
    key = shared.stream_key(key)
    body = await shared.arun_sse(key, request.headers.get("Last-Event-ID"))  # a 404 before any byte is sent
    if request.method == "HEAD":
        await body.aclose()  # type: ignore[attr-defined]
    return _sse(request, lambda: body)


@app.post("/runs/{key}/cancel")
def cancel_run(key: str) -> Response:  # sync: a RedisRelay's cancel is a blocking call, run in the thread pool
    return Response(json.dumps(shared.cancel_run(key)), status_code=202, media_type="application/json")


@app.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    validation.check_content_type(request.headers.get("Content-Type"))
    validation.check_length(request.headers.get("Content-Length"))
    req = validation.chat_request(validation.parse_json(await _read_body(request)))
    if req.stream:
        return StreamingResponse(shared.acompletion_sse(req), headers=dict(SSE_HEADERS))
    # ASCII JSON: any text the model wrote encodes (JSONResponse's UTF-8 fails on a lone surrogate)
    return Response(json.dumps(await shared.acompletion(req)), media_type="application/json")
