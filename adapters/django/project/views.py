"""Django reference views, for WSGI (gunicorn) and ASGI (uvicorn) alike.

Django buffers a sync iterator served under ASGI, and an async one under WSGI,
so each view picks the face that matches the server: `iter_callbacks` + `sse`
under WSGI, `aiter_callbacks` + `asse` under ASGI. Every error is JSON
(`adapters/validation.py`), including Django's own 400, 404 and 500.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

import callstream
from adapters import shared, validation
from adapters.validation import ApiError
from callstream.sse import SSE_HEADERS, asse, sse

logger = logging.getLogger("adapters.django")
View = Callable[..., HttpResponse]


def _error(err: ApiError) -> HttpResponse:
    return HttpResponse(err.json(), status=err.status, headers=err.headers, content_type="application/json")


def route(*methods: str) -> Callable[[View], View]:
    """Enforce the route's methods (GET brings HEAD, as in Flask and Starlette); ApiError becomes JSON."""
    allowed = [*methods, "HEAD"] if "GET" in methods else list(methods)

    def decorate(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in allowed:
                return _error(validation.method_not_allowed(str(request.method), allowed))
            try:
                response = view(request, *args, **kwargs)
            except ApiError as err:
                return _error(err)
            if request.method == "HEAD" and isinstance(response, StreamingHttpResponse):
                # the headers only: gunicorn would run the whole stream to drop its bytes
                response.close()
                return HttpResponse(status=response.status_code, headers=dict(response.headers))
            return response

        return wrapper

    return decorate


def _sse_response(request: HttpRequest, runnable: Any, inputs: Any, config: Any = None) -> StreamingHttpResponse:
    if isinstance(request, ASGIRequest):
        events: Any = callstream.aiter_callbacks(runnable, inputs, config)
        body: Any = shared.atracked(asse(events, heartbeat=shared.HEARTBEAT))
    else:
        body = shared.tracked(sse(callstream.iter_callbacks(runnable, inputs, config), heartbeat=shared.HEARTBEAT))
    return StreamingHttpResponse(body, headers=SSE_HEADERS)


@route("GET")
def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(shared.INDEX_HTML, content_type="text/html")


@route("GET")
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse(shared.health())


@route("GET")
def stream(request: HttpRequest) -> StreamingHttpResponse:
    return _sse_response(request, shared.chain(), shared.chain_input(request.GET.get("q", "")))


@route("GET")
def agent(request: HttpRequest) -> StreamingHttpResponse:
    return _sse_response(request, shared.agent(), shared.agent_input(request.GET.get("q", "")))


@route("GET")
def approval(request: HttpRequest) -> HttpResponse:
    """The agent that asks before it sends an email: SSE ending with `interrupt`, then `done`."""
    config = shared.approval_thread(request.GET.get("thread"))
    return _sse_response(request, shared.approval_agent(), shared.approval_input(request.GET.get("q", "")), config)


def _reader(request: HttpRequest) -> Callable[[int], bytes]:
    """How to read the body: Django's WSGI request reads CONTENT_LENGTH bytes, so none of a
    chunked body (gunicorn decodes one in `wsgi.input`); `request.body` would apply Django's
    own limit with an HTML 400, so the view reads through `validation.read_limited`."""
    meta = request.META
    if not meta.get("CONTENT_LENGTH") and "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        stream = meta.get("wsgi.input")
        if stream is not None:
            return stream.read
    return request.read


@route("POST")
def approval_decision(request: HttpRequest, thread: str) -> HttpResponse:
    """The page's decision: the same thread resumed with `Command(resume=...)`, as SSE."""
    config = shared.approval_thread(thread)
    meta = request.META
    resume = shared.decision(
        validation.read_json(meta.get("CONTENT_TYPE"), meta.get("CONTENT_LENGTH"), _reader(request))
    )
    return _sse_response(request, shared.approval_agent(), resume, config)


def _json(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(data), status=status, content_type="application/json")


@route("POST")
def start_run(request: HttpRequest) -> HttpResponse:
    """Start a run on this process's relay (a worker thread, under WSGI and ASGI alike); answers its key."""
    meta = request.META
    body = validation.read_json(meta.get("CONTENT_TYPE"), meta.get("CONTENT_LENGTH"), _reader(request))
    return _json(shared.start_run(validation.run_request(body)), status=202)


@route("GET")
def run_stream(request: HttpRequest, key: str) -> StreamingHttpResponse:
    """The run's events, resumed after `Last-Event-ID` when the browser reconnects."""
    last = request.headers.get("Last-Event-ID")
    if not isinstance(request, ASGIRequest):
        return StreamingHttpResponse(shared.run_sse(key, last), headers=SSE_HEADERS)
    # Under ASGI this view runs in a thread: the key is checked and authorized here (a blocking
    # lookup may), the async body is made on the server's loop.
    body = async_to_sync(shared.arun_sse)(shared.stream_key(key), last)
    return StreamingHttpResponse(body, headers=SSE_HEADERS)


@route("POST")
def cancel_run(request: HttpRequest, key: str) -> HttpResponse:
    return _json(shared.cancel_run(key), status=202)


@route("POST")
def chat_completions(request: HttpRequest) -> HttpResponse:
    meta = request.META
    body = validation.read_json(meta.get("CONTENT_TYPE"), meta.get("CONTENT_LENGTH"), _reader(request))
    req = validation.chat_request(body)
    if req.stream:
        wire = shared.acompletion_sse(req) if isinstance(request, ASGIRequest) else shared.completion_sse(req)
        return StreamingHttpResponse(wire, headers=SSE_HEADERS)
    return HttpResponse(json.dumps(shared.completion(req)), content_type="application/json")


# Django's own error views (urls.py names them): JSON too, never its HTML pages.
def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    # a SuspiciousOperation says what was refused (too many query fields, a host not allowed...)
    why = str(exception) if isinstance(exception, SuspiciousOperation) else "the request could not be read"
    return _error(ApiError(400, f"Bad request: {why}", code="bad_request"))


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _error(validation.not_found(str(request.method), request.path))


def server_error(request: HttpRequest) -> HttpResponse:
    return _error(validation.server_error())
