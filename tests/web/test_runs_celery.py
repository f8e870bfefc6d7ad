"""Issue 18, end to end in real processes: redis-server, a Celery worker, two uvicorn app processes.

The apps run in their Redis mode (`CALLSTREAM_REDIS_URL`, `CALLSTREAM_CELERY=1`): `POST /runs`
reserves a key and enqueues the run; the worker runs it against the local OpenAI-compatible
server and publishes it on Redis; either app process serves its stream.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from httpx_sse import connect_sse

from callstream.testing import OpenAIServer
from tests.web.servers import BIN, ROOT, AppServer
from tests.web.test_apps import tag
from tests.web.test_runs import check_stale_id, frames, read, start, text_of

LEASE = 1.0
pytestmark = pytest.mark.timeout(90)  # the stack's start: redis-server, two uvicorn apps, a Celery worker


def stack_env(redis_url: str, openai_server: OpenAIServer) -> dict[str, str]:
    return {
        "CALLSTREAM_REDIS_URL": redis_url,
        "CALLSTREAM_CELERY": "1",
        "CALLSTREAM_LEASE": str(LEASE),
        "CALLSTREAM_BASE_URL": openai_server.base_url,
        "CALLSTREAM_MODEL": "scripted:tokens=20,delay_ms=1",
        "OPENAI_API_KEY": "test-key",
    }


class Worker:
    """`celery -A adapters.celery.worker worker` in its own process group (so `kill -9` takes it all)."""

    def __init__(self, env: dict[str, str]) -> None:
        cmd = [str(BIN / "celery"), "-A", "adapters.celery.worker", "worker", "-l", "info", "-c", "2"]
        cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._drain, name="celery-log", daemon=True).start()
        if not self.ready.wait(60):
            self.kill()
            raise RuntimeError("the Celery worker did not start:\n" + "".join(self.lines)[-3000:])

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.append(line.decode(errors="replace"))
            if " ready." in self.lines[-1]:
                self.ready.set()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def stack(redis_server: Any, openai_server: OpenAIServer) -> Iterator[dict[str, Any]]:
    env = stack_env(redis_server.url, openai_server)
    apps = [AppServer("fastapi-uvicorn", openai_server.base_url, env=env) for _ in range(2)]
    out: dict[str, Any] = {"env": env, "apps": [a.start() for a in apps], "worker": Worker(env)}
    yield out
    out["worker"].stop()
    for app in apps:
        app.stop()


@pytest.fixture
def worker(stack: dict[str, Any]) -> Worker:
    """The module's worker, started again if a test killed it."""
    if not stack["worker"].alive():
        stack["worker"] = Worker(stack["env"])
    return stack["worker"]


def test_a_run_in_the_worker_resumes_on_another_app_process(stack: dict[str, Any], worker: Worker) -> None:
    first, second = stack["apps"]
    key = start(first, agent="chain", q="[[tokens=30,delay_ms=5]] hi")
    with httpx.Client(timeout=20) as client, connect_sse(client, "GET", f"{first.url}/runs/{key}/stream") as source:
        seen = []
        for event in frames(source.iter_sse()):  # the client leaves after a few events
            seen.append((event.event, event.id, json.loads(event.data)))
            if len(seen) == 5:
                break
    rest = read(second, key, seen[-1][1])  # reconnects to another process, with Last-Event-ID
    whole = read(second, key)
    assert seen + rest[:-1] == whole[:-1] and rest[-1][2] == whole[-1][2] == {"status": "completed"}
    ids = [int(i) for _, i, _ in whole[:-1]]
    assert ids == sorted(set(ids))
    assert text_of(whole).count(" ") >= 29
    assert "callstream.run" in "".join(worker.lines)  # the worker ran it, not the app


def test_cancel_through_the_app_stops_the_workers_model(
    stack: dict[str, Any], worker: Worker, openai_server: OpenAIServer
) -> None:
    first, second = stack["apps"]
    t = tag()
    key = start(first, agent="chain", q=f"[[tokens=5000,delay_ms=2,tag={t}]] hi")
    with httpx.Client(timeout=20) as client, connect_sse(client, "GET", f"{second.url}/runs/{key}/stream") as source:
        events = frames(source.iter_sse())
        next(e for e in events if e.event == "token")
        t_cancel = time.monotonic()
        assert client.post(f"{first.url}/runs/{key}/cancel").status_code == 202  # another process
        rest = [(e.event, json.loads(e.data)) for e in events]
    assert rest[-1] == ("done", {"status": "cancelled"})
    row = openai_server.wait_ended(t, timeout=10)[0]
    assert row["disconnected"] and not row["done"]
    print(f"cancel across processes: the model's request closed {row['t_end'] - t_cancel:.3f} s after the POST")


def test_a_failed_run_is_retried_as_new_attempts_under_its_key(stack: dict[str, Any], worker: Worker) -> None:
    first, second = stack["apps"]
    key = start(first, agent="chain", q="[[tokens=10,delay_ms=1,fail_after=3]] hi")
    live = read(first, key)  # a subscriber ends with the attempt it watched: it cannot know a retry comes
    assert live[-1][0] == "error" and live[-1][2]["type"] == "RemoteError"
    # Celery retries twice (`max_retries=2`), then gives up: the worker says so in its log
    deadline = time.monotonic() + 30
    while not any("callstream.run" in line and "raised unexpected" in line for line in worker.lines):
        assert time.monotonic() < deadline, "".join(worker.lines)[-3000:]
        time.sleep(0.05)
    replay = read(second, key)  # a late subscriber sees every attempt, each after an `attempt` event
    names = [n for n, _, _ in replay]
    assert names.count("attempt") == 2 and replay[-1][0] == "error" and replay[-1][2]["type"] == "RemoteError"
    assert [n for n in names if n != "attempt"] == ["token"] * 9 + ["error"]
    ids = [int(i) for _, i, _ in replay[:-1]]
    assert ids == sorted(set(ids))


def test_a_killed_worker_is_reported_within_the_lease(stack: dict[str, Any], worker: Worker) -> None:
    first, second = stack["apps"]
    key = start(first, agent="chain", q="[[tokens=5000,delay_ms=2]] hi")
    with httpx.Client(timeout=20) as client, connect_sse(client, "GET", f"{second.url}/runs/{key}/stream") as source:
        events = frames(source.iter_sse())
        next(e for e in events if e.event == "token")
        t_kill = time.monotonic()
        worker.kill()  # SIGKILL: no outcome recorded, the lease stops being renewed
        last = list(events)[-1]
        waited = time.monotonic() - t_kill
    assert last.event == "error" and json.loads(last.data)["type"] == "ProducerLost", last.data
    assert waited < LEASE + 1.5, waited
    assert httpx.get(f"{first.url}/runs/{quote(key)}/stream", timeout=10).text.count("ProducerLost") == 1


def test_unknown_keys_and_stale_ids_are_answered_as_with_a_memory_relay(stack: dict[str, Any], worker: Worker) -> None:
    # The app's loop awaits Redis (astatus, then the subscription's first read, never a blocking
    # check: test_relay.py): still a 404 before any byte for an unknown key, and one `error`
    # event for a stale or malformed id.
    app = stack["apps"][0]
    response = httpx.get(f"{app.url}/runs/{'k' * 22}/stream", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "run_not_found"
    key = start(app, agent="chain", q="[[tokens=3,delay_ms=1]] hi")
    whole = read(app, key)
    assert whole[-1][2] == {"status": "completed"}
    for last in ("999999", "abc", "-1"):
        check_stale_id(app, key, last)


@pytest.mark.parametrize("kind", ["django-gunicorn-gthread", "django-uvicorn-asgi", "flask-gunicorn-gthread"])
def test_the_other_apps_enqueue_and_serve_runs_on_redis(
    stack: dict[str, Any], worker: Worker, openai_server: OpenAIServer, kind: str
) -> None:
    # The same Redis mode in Django (WSGI and ASGI) and Flask: the worker runs it, the app
    # serves it and resumes it; an unknown key is a 404, a stale id one `error` event.
    app = AppServer(kind, openai_server.base_url, env=stack["env"]).start()
    try:
        key = start(app, agent="chain", q="[[tokens=8,delay_ms=1]] hi")
        whole = read(app, key)
        assert whole[-1][2] == {"status": "completed"} and text_of(whole).count(" ") >= 7
        assert read(app, key, whole[2][1])[:-1] == whole[3:-1]
        response = httpx.get(f"{app.url}/runs/{'k' * 22}/stream", timeout=10)
        assert response.status_code == 404 and response.json()["error"]["code"] == "run_not_found"
        check_stale_id(app, key, "999999")
    finally:
        app.stop()
    assert "callstream.run" in "".join(worker.lines)


def test_four_worker_processes_share_their_runs_on_redis(redis_server: Any, openai_server: OpenAIServer) -> None:
    # The setup where a MemoryRelay answers 404 (test_runs.py skips it): gunicorn -w 4, here on Redis
    env = {**stack_env(redis_server.url, openai_server), "CALLSTREAM_CELERY": ""}
    app = AppServer("flask-gunicorn-sync", openai_server.base_url, env=env).start()
    try:
        keys = [start(app, agent="chain", q="[[tokens=5,delay_ms=1]] hi") for _ in range(8)]
        for key in keys:  # each request may land on any of the four processes
            whole = read(app, key)
            assert whole[-1][2] == {"status": "completed"} and read(app, key, whole[2][1])[:-1] == whole[3:-1]
    finally:
        app.stop()
