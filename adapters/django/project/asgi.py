"""The ASGI application: Django's, behind a cap on the request body.

Django's ASGI handler reads the whole body (into memory, then a temporary
file) before any view runs, so a view's size check would come after a huge
upload. `limit_body` ends the body Django reads one byte past
`CALLSTREAM_MAX_BODY`: the view then sees too many bytes and answers 413.
"""

import os
from typing import Any

from django.core.asgi import get_asgi_application

from adapters.validation import MAX_BODY

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "adapters.django.project.settings")
django_application = get_asgi_application()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return await django_application(scope, receive, send)
    size = 0

    async def limit_body() -> dict[str, Any]:
        nonlocal size
        message: dict[str, Any] = await receive()
        while size > MAX_BODY and message["type"] == "http.request":
            # the body was ended early: Django now only waits for the disconnect
            message = await receive()
        if message["type"] == "http.request":
            body = message.get("body", b"")[: MAX_BODY + 1 - size]
            size += len(body)
            if size > MAX_BODY:  # enough to know: stop reading here
                message = {**message, "body": body, "more_body": False}
        return message

    return await django_application(scope, limit_body, send)
