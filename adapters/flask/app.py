"""Flask reference app: `gunicorn -k gthread --threads 32 adapters.flask.app:app` (from the repo root).

Routes (the same in all three apps): `GET /`, `GET /stream?q=`, `GET /agent?q=`,
`GET /approval?q=&thread=`, `POST /approval/<thread>/decision`, `POST /v1/chat/completions`,
`GET /health`, and the runs on a relay: `POST /runs`, `GET /runs/<key>/stream` (honours
`Last-Event-ID`), `POST /runs/<key>/cancel`. Every error is JSON (`adapters/validation.py`).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

import callstream
from adapters import shared, validation
from adapters.validation import ApiError
from callstream.sse import SSE_HEADERS, sse

app = Flask(__name__)


def _error(err: ApiError) -> Response:
    return Response(err.json(), status=err.status, headers=err.headers, mimetype="application/json")


@app.errorhandler(ApiError)
def api_error(err: ApiError) -> Response:
    return _error(err)


@app.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    """Werkzeug's own errors (404, 405, a bad request line...) in the same JSON shape."""
    if exc.code == 404:
        return _error(validation.not_found(request.method, request.path))
    if exc.code == 405:
        return _error(validation.method_not_allowed(request.method, getattr(exc, "valid_methods", None) or ()))
    if exc.code == 413:
        return _error(validation.too_large())
    return _error(ApiError(exc.code or 500, exc.description or exc.name))


@app.errorhandler(Exception)
def crash(exc: Exception) -> Response:
    app.logger.error("unhandled error", exc_info=exc)  # the client gets no traceback, the log does
    return _error(validation.server_error())


@app.get("/")
def index() -> Response:
    return Response(shared.INDEX_HTML, mimetype="text/html")


@app.get("/health")
def health() -> dict[str, Any]:
    return shared.health()


@app.get("/stream")
def stream() -> Response:
    events = callstream.iter_callbacks(shared.chain(), shared.chain_input(request.args.get("q", "")))
    return Response(shared.tracked(sse(events, heartbeat=shared.HEARTBEAT)), headers=SSE_HEADERS)


@app.get("/agent")
def agent() -> Response:
    events = callstream.iter_callbacks(shared.agent(), shared.agent_input(request.args.get("q", "")))
    return Response(shared.tracked(sse(events, heartbeat=shared.HEARTBEAT)), headers=SSE_HEADERS)


@app.get("/approval")
def approval() -> Response:
    """The agent that asks before it sends an email: SSE ending with `interrupt`, then `done`."""
    config = shared.approval_thread(request.args.get("thread"))
    inputs = shared.approval_input(request.args.get("q", ""))
    events = callstream.iter_callbacks(shared.approval_agent(), inputs, config)
    return Response(shared.tracked(sse(events, heartbeat=shared.HEARTBEAT)), headers=SSE_HEADERS)


@app.post("/approval/<thread>/decision")
def approval_decision(thread: str) -> Response:
    """The page's decision: the same thread resumed with `Command(resume=...)`, as SSE."""
    config = shared.approval_thread(thread)
    headers = request.headers
    body = validation.read_json(headers.get("Content-Type"), headers.get("Content-Length"), request.stream.read)
    resume = shared.decision(body)
    events = callstream.iter_callbacks(shared.approval_agent(), resume, config)
    return Response(shared.tracked(sse(events, heartbeat=shared.HEARTBEAT)), headers=SSE_HEADERS)


def _json_body() -> object:
    headers = request.headers
    return validation.read_json(headers.get("Content-Type"), headers.get("Content-Length"), request.stream.read)


@app.post("/runs")
def start_run() -> Response:
    """Start a run on this process's relay; the body is `{"agent": ..., "q": ...}`; answers its key."""
    started = shared.start_run(validation.run_request(_json_body()))
    return Response(json.dumps(started), status=202, mimetype="application/json")


@app.get("/runs/<key>/stream")
def run_stream(key: str) -> Response:
    """The run's events, resumed after `Last-Event-ID` when the browser reconnects."""
    return Response(shared.run_sse(key, request.headers.get("Last-Event-ID")), headers=SSE_HEADERS)


@app.post("/runs/<key>/cancel")
def cancel_run(key: str) -> Response:
    return Response(json.dumps(shared.cancel_run(key)), status=202, mimetype="application/json")


@app.post("/v1/chat/completions")
def chat_completions() -> Response:
    headers = request.headers
    body = validation.read_json(headers.get("Content-Type"), headers.get("Content-Length"), request.stream.read)
    req = validation.chat_request(body)
    if req.stream:
        return Response(shared.completion_sse(req), headers=SSE_HEADERS)
    return Response(json.dumps(shared.completion(req)), mimetype="application/json")
