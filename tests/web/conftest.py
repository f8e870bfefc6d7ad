"""Real servers for the reference apps: gunicorn and uvicorn in subprocesses on 127.0.0.1 (`servers.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.servers import SERVERS, AppServer


@pytest.fixture(scope="session")
def _servers(openai_server: Any) -> Iterator[dict[str, AppServer]]:
    started: dict[str, AppServer] = {}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(params=list(SERVERS))
def app(request: pytest.FixtureRequest, _servers: dict[str, AppServer], openai_server: Any) -> AppServer:
    name = str(request.param)
    if name not in _servers:
        _servers[name] = AppServer(name, openai_server.base_url).start()
    return _servers[name]
