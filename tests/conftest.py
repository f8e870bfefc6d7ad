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


#: `make test` runs `-n 2 --dist loadgroup`, scheduled by `pytest_xdist_make_scheduler` below: a test is a
#: unit of work of its own, but for the tests that share a costly fixture of a wider scope (the web apps'
#: servers, a Celery stack, a built site, a wheel), which go to one worker together, so that it is made once
#: per worker at most (as under `--dist loadfile`). A unit is named by the longest of these prefixes of
#: its tests' ids; `pytest_collection_modifyitems` checks that every test using such a fixture has one.
SHARED_FIXTURE_UNITS = {
    "tests/web/test_apps.py": "tests/web/test_apps.py",
    "tests/web/test_approval.py": "tests/web/test_approval.py",
    "tests/web/test_bad_requests.py": "tests/web/test_bad_requests.py",
    "tests/web/test_runs.py": "tests/web/test_runs.py",
    "tests/web/test_runs_celery.py": "tests/web/test_runs_celery.py",
    "tests/integration/test_haystack_web.py": "tests/integration/test_haystack_web.py",
    "tests/property/test_relay_props.py": "tests/property/test_relay_props.py",
    "tests/unit/test_push_sdks.py": "tests/unit/test_push_sdks.py",
    "tests/test_packaging.py": "tests/test_packaging.py",
    "tests/test_docs.py::test_built_pages_show_no_snippet_marker": "tests/test_docs.py::site",
    "tests/test_docs.py::test_every_example_is_rendered_on_a_page": "tests/test_docs.py::site",
}
#: session fixtures cheap enough for each worker to start its own
CHEAP_SHARED = {"openai_server", "redis_server"}


def unit_of(nodeid: str) -> str:
    """The unit of work of a test id: its shared-fixture unit, else the test itself."""
    prefixes = [p for p in SHARED_FIXTURE_UNITS if nodeid == p or nodeid.startswith((p + "::", p + "["))]
    return SHARED_FIXTURE_UNITS[max(prefixes, key=len)] if prefixes else nodeid


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    # pytest-xdist's own loadgroup reads `xdist_group` marks through the test ids, which pytest 9.2 no
    # longer lets it change (pytest-xdist #1386: the marks are silently ignored); the units are named here.
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class SharedFixtureScheduling(LoadScopeScheduling):  # type: ignore[misc]
        # the largest units first (xdist's --loadscope-reorder), then the single tests
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = []
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or unit_of(item.nodeid) != item.nodeid:
            continue
        shared = [
            d.argname
            for defs in info.name2fixturedefs.values()
            for d in defs
            if d.scope != "function" and d.func.__module__.startswith("tests") and d.argname not in CHEAP_SHARED
        ]
        if shared:
            missing.append(f"{item.nodeid} ({', '.join(sorted(set(shared)))})")
    if missing:
        raise pytest.UsageError(
            "tests using a costly fixture of a wider scope, in no unit of tests/conftest.py's SHARED_FIXTURE_UNITS:\n"
            + "\n".join(missing[:20])
        )


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
