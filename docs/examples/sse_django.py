"""Django: a streaming view (WSGI: sync face; under ASGI use aiter_callbacks + asse)."""

import django
from django.conf import settings

settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__)
django.setup()

from django.http import StreamingHttpResponse  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django.urls import path  # noqa: E402

import callstream  # noqa: E402
from callstream.sse import SSE_HEADERS, sse  # noqa: E402
from callstream.testing import ScriptedChatModel  # noqa: E402

model = ScriptedChatModel(responses=["Streamed by Django."], chunk_size=4)


def chat(request):
    stream = callstream.iter_callbacks(model, request.GET.get("q", "hi"))
    return StreamingHttpResponse(sse(stream, heartbeat=15), headers=SSE_HEADERS)


urlpatterns = [path("chat", chat)]

response = chat(RequestFactory().get("/chat?q=hello"))
body = b"".join(response.streaming_content)
print(body.decode())
assert b"event: done" in body
