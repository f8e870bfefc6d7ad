"""The reference apps with the benchmarks' baseline route, `GET /native?q=`, mounted.

`/native` streams the apps' chain with its own `stream()` (or `astream()`),
framed as SSE by hand: no callstream, so no cancellation, heartbeat or error
event. The apps in `adapters/` serve callstream only; `benchmarks/web.py` runs
these objects under the same servers, so `/stream` and `/native` go through the
same server, framework and routing, and only the streaming differs:

- `benchmarks.webapps.flask_app:app` (WSGI),
- `benchmarks.webapps.django_app:wsgi` and `benchmarks.webapps.django_app:asgi`,
- `benchmarks.webapps.fastapi_app:app` (ASGI).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

from adapters import shared

from callstream.sse import format_sse

#: the reference server name (`tests/web/servers.py`) -> the app with `/native` to run under it
APPS: dict[str, str] = {
    "flask-gunicorn-gthread": "benchmarks.webapps.flask_app:app",
    "flask-gunicorn-sync": "benchmarks.webapps.flask_app:app",
    "django-gunicorn-gthread": "benchmarks.webapps.django_app:wsgi",
    "django-uvicorn-asgi": "benchmarks.webapps.django_app:asgi",
    "fastapi-uvicorn": "benchmarks.webapps.fastapi_app:app",
}


def native_sse(q: str) -> Iterator[bytes]:
    """The baseline: the chain's own `stream()`, framed as SSE by hand."""
    for text in shared.chain().stream(shared.chain_input(q)):
        yield format_sse(json.dumps({"text": text}), event="token")
    yield format_sse('{"status": "completed"}', event="done")


async def anative_sse(q: str) -> AsyncIterator[bytes]:
    """The async baseline: the chain's own `astream()`."""
    async for text in shared.chain().astream(shared.chain_input(q)):
        yield format_sse(json.dumps({"text": text}), event="token")
    yield format_sse('{"status": "completed"}', event="done")
