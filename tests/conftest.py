from __future__ import annotations

import gc
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from callstream.sinks import SinkName

settings.register_profile(
    "ci",
    deadline=None,  # timing-based deadlines cause more trouble than good on 2-core CI
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("ci")

SINKS: list[SinkName] = ["queue", "deque", "bounded"]
FACES = ["sync", "async"]


#: session fixtures cheap enough for each xdist worker to start its own
CHEAP_SHARED = {"openai_server", "redis_server"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs `-n 2 --dist loadgroup`: a test is a unit of work of its own, but for the tests
    of a module that share a costly fixture of a wider scope (the web apps' servers, a built site, a
    Celery stack), which stay together on one worker (an `xdist_group` per module), so that each is
    started once per worker at most, as under `--dist loadfile`. xdist sends the groups first (the largest
    first) and the single tests after them, so the two workers end together."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        shared = any(
            d.scope != "function" and d.func.__module__.startswith("tests") and d.argname not in CHEAP_SHARED
            for defs in info.name2fixturedefs.values()
            for d in defs
        )
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture(params=SINKS)
def sink(request: pytest.FixtureRequest) -> SinkName:
    return request.param


@pytest.fixture(params=FACES)
def face(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def callstream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("callstream-")]


def wait_for_no_workers(deadline: float = 5.0) -> None:
    # A full collection finalises streams held in cycles; it is run now and
    # then, not on every poll: on the large heap of a whole test session a
    # collection holds the GIL long enough to starve hundreds of exiting workers.
    end = time.monotonic() + deadline
    next_gc = 0.0
    while callstream_threads():
        if time.monotonic() > end:
            alive = callstream_threads()
            names = ", ".join(t.name for t in alive[:10])
            frames = sys._current_frames()
            stack = "".join(traceback.format_stack(frames[alive[0].ident])) if alive[0].ident in frames else ""
            raise AssertionError(f"{len(alive)} callstream worker threads still alive: {names}\n{stack}")
        if time.monotonic() >= next_gc:
            gc.collect()
            next_gc = time.monotonic() + 0.25
        time.sleep(0.005)


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Every worker a test started has ended shortly after the test."""
    yield
    wait_for_no_workers()


@pytest.fixture(scope="session")
def openai_server() -> Iterator[Any]:
    """The local OpenAI-compatible server (`callstream.testing.OpenAIServer`) on 127.0.0.1."""
    from callstream.testing import OpenAIServer

    server = OpenAIServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """A redis-server of the session's own (`tests/redis_server.py`); skips when it is not installed."""
    from tests.redis_server import REDIS_SERVER, RedisServer

    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; `.ci/run` installs it)")
    server = RedisServer().start()
    yield server
    server.close()


RELAYS = ["memory", "redis"]


@pytest.fixture(params=RELAYS)
def relay_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_relay(relay_kind: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """`make_relay(**options)`: a `MemoryRelay`, or a `RedisRelay` on the session's redis-server
    under a prefix of its own (lease 2 s unless given: a loaded machine must not lose a live producer)."""
    made: list[Any] = []

    def make(**kw: Any) -> Any:
        if relay_kind == "memory":
            import callstream

            return callstream.MemoryRelay(**kw)
        import uuid

        from callstream.redis import RedisRelay

        server = request.getfixturevalue("redis_server")
        kw.setdefault("lease", 2.0)
        relay = RedisRelay(server.url, prefix=f"t-{uuid.uuid4().hex[:10]}", **kw)
        made.append(relay)
        return relay

    yield make
    for relay in made:
        relay.close()
