"""Flask reference app: `gunicorn -k gthread --threads 32 adapters.flask.app:app` (from the repo root).

Routes (the same in all three apps): `GET /`, `GET /stream?q=`, `GET /agent?q=`,
`GET /approval?q=&thread=`, `POST /approval/<thread>/decision`, `POST /v1/chat/completions`,
`GET /health`.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response, request

import callstream
import callstream.openai
from adapters import shared
from callstream.sse import SSE_HEADERS, sse

app = Flask(__name__)


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


@app.get("/native")
def native() -> Response:
    return Response(shared.native_sse(request.args.get("q", "")), headers=SSE_HEADERS)


@app.get("/agent")
def agent() -> Response:
    events = callstream.iter_callbacks(shared.agent(), shared.agent_input(request.args.get("q", "")))
    return Response(shared.tracked(sse(events, heartbeat=shared.HEARTBEAT)), headers=SSE_HEADERS)


@app.get("/approval")
def approval() -> Response:
    """The agent that asks before it sends an email: SSE ending with `interrupt`, then `done`."""
    try:
        config = shared.approval_thread(request.args.get("thread", ""))
    except ValueError as exc:
        return Response(json.dumps({"error": str(exc)}), status=400, mimetype="application/json")
    inputs = shared.approval_input(request.args.get("q", ""))
    events = callstream.iter_callbacks(shared.approval_agent(), inputs, config)
    return Response(shared.tracked(sse(events, heartbeat=shared.HEARTBEAT)), headers=SSE_HEADERS)


@app.post("/approval/<thread>/decision")
def approval_decision(thread: str) -> Response:
    """The page's decision: the same thread resumed with `Command(resume=...)`, as SSE."""
    try:
        config, resume = shared.approval_thread(thread), shared.decision(request.get_json(force=True))
    except ValueError as exc:
        return Response(json.dumps({"error": str(exc)}), status=400, mimetype="application/json")
    events = callstream.iter_callbacks(shared.approval_agent(), resume, config)
    return Response(shared.tracked(sse(events, heartbeat=shared.HEARTBEAT)), headers=SSE_HEADERS)


@app.post("/v1/chat/completions")
def chat_completions() -> Any:
    body = request.get_json(force=True)
    inputs = shared.chain_input(shared.question_of(body))
    model = body.get("model") or shared.MODEL_NAME
    if body.get("stream"):
        events = callstream.iter_callbacks(shared.chain(), inputs)
        wire = callstream.openai.sse(events, model=model, heartbeat=shared.HEARTBEAT)
        return Response(shared.tracked(wire), headers=SSE_HEADERS)
    text = shared.chain().invoke(inputs)
    return Response(json.dumps(callstream.openai.chat_completion(text, model=model)), mimetype="application/json")
