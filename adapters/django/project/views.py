"""Django reference views, for WSGI (gunicorn) and ASGI (uvicorn) alike.

Django buffers a sync iterator served under ASGI, and an async one under WSGI,
so each view picks the face that matches the server: `iter_callbacks` + `sse`
under WSGI, `aiter_callbacks` + `asse` under ASGI.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

import callstream
import callstream.openai
from adapters import shared
from callstream.sse import SSE_HEADERS, asse, sse


def _sse_response(request: HttpRequest, runnable: Any, inputs: Any, config: Any = None) -> StreamingHttpResponse:
    if isinstance(request, ASGIRequest):
        events: Any = callstream.aiter_callbacks(runnable, inputs, config)
        body: Any = shared.atracked(asse(events, heartbeat=shared.HEARTBEAT))
    else:
        body = shared.tracked(sse(callstream.iter_callbacks(runnable, inputs, config), heartbeat=shared.HEARTBEAT))
    return StreamingHttpResponse(body, headers=SSE_HEADERS)


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(shared.INDEX_HTML, content_type="text/html")


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse(shared.health())


def stream(request: HttpRequest) -> StreamingHttpResponse:
    return _sse_response(request, shared.chain(), shared.chain_input(request.GET.get("q", "")))


def native(request: HttpRequest) -> StreamingHttpResponse:
    q = request.GET.get("q", "")
    body = shared.anative_sse(q) if isinstance(request, ASGIRequest) else shared.native_sse(q)
    return StreamingHttpResponse(body, headers=SSE_HEADERS)


def agent(request: HttpRequest) -> StreamingHttpResponse:
    return _sse_response(request, shared.agent(), shared.agent_input(request.GET.get("q", "")))


def approval(request: HttpRequest) -> HttpResponse:
    """The agent that asks before it sends an email: SSE ending with `interrupt`, then `done`."""
    try:
        config = shared.approval_thread(request.GET.get("thread", ""))
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return _sse_response(request, shared.approval_agent(), shared.approval_input(request.GET.get("q", "")), config)


@csrf_exempt
def approval_decision(request: HttpRequest, thread: str) -> HttpResponse:
    """The page's decision: the same thread resumed with `Command(resume=...)`, as SSE."""
    if request.method != "POST":
        return JsonResponse({"error": "POST a decision"}, status=405)
    try:
        config, resume = shared.approval_thread(thread), shared.decision(json.loads(request.body or b"{}"))
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return _sse_response(request, shared.approval_agent(), resume, config)


@csrf_exempt
def chat_completions(request: HttpRequest) -> HttpResponse:
    body = json.loads(request.body or b"{}")
    inputs = shared.chain_input(shared.question_of(body))
    model = body.get("model") or shared.MODEL_NAME
    if body.get("stream"):
        if isinstance(request, ASGIRequest):
            stream = callstream.aiter_callbacks(shared.chain(), inputs)
            wire: Any = shared.atracked(callstream.openai.asse(stream, model=model, heartbeat=shared.HEARTBEAT))
        else:
            sync = callstream.iter_callbacks(shared.chain(), inputs)
            wire = shared.tracked(callstream.openai.sse(sync, model=model, heartbeat=shared.HEARTBEAT))
        return StreamingHttpResponse(wire, headers=SSE_HEADERS)
    text = shared.chain().invoke(inputs)
    return JsonResponse(callstream.openai.chat_completion(text, model=model))
