from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,  # timing-based deadlines cause more trouble than good on 2-core CI
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("ci")

SINKS = ["queue", "deque", "bounded"]
FACES = ["sync", "async"]


@pytest.fixture(params=SINKS)
def sink(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=FACES)
def face(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def callstream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("callstream-")]


def wait_for_no_workers(deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while callstream_threads():
        if time.monotonic() > end:
            names = ", ".join(t.name for t in callstream_threads()[:10])
            raise AssertionError(f"callstream worker threads still alive: {names}")
        gc.collect()
        time.sleep(0.005)


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Every worker a test started has ended shortly after the test."""
    yield
    wait_for_no_workers()


@pytest.fixture(scope="session")
def openai_server() -> Iterator[Any]:
    """The local OpenAI-compatible server (tests/openai_server.py) on 127.0.0.1."""
    from tests.openai_server import OpenAIServer

    server = OpenAIServer().start()
    yield server
    server.stop()
