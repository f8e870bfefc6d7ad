"""The Flask reference app with `GET /native` mounted: `gunicorn benchmarks.webapps.flask_app:app`."""

from __future__ import annotations

from adapters.flask.app import app
from flask import Response, request

from benchmarks.webapps import native_sse
from callstream.sse import SSE_HEADERS

__all__ = ("app",)


@app.get("/native")
def native() -> Response:
    return Response(native_sse(request.args.get("q", "")), headers=SSE_HEADERS)
