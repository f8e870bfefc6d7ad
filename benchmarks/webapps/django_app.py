"""The Django reference project with `GET /native` mounted: `wsgi` for gunicorn, `asgi` for uvicorn.

The route is appended to the project's URLconf at import, before any request
builds Django's resolver.
"""

from __future__ import annotations

from adapters.django.project.asgi import application as asgi
from adapters.django.project.views import route
from adapters.django.project.wsgi import application as wsgi
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import path

from benchmarks.webapps import anative_sse, native_sse
from callstream.sse import SSE_HEADERS

__all__ = ("asgi", "wsgi")


@route("GET")
def native(request: HttpRequest) -> StreamingHttpResponse:
    q = request.GET.get("q", "")
    # the face that matches the server: Django buffers the other one
    body = anative_sse(q) if isinstance(request, ASGIRequest) else native_sse(q)
    return StreamingHttpResponse(body, headers=SSE_HEADERS)


def _mount() -> None:
    from adapters.django.project import urls

    urls.urlpatterns.append(path("native", native))


_mount()
