"""Issue 17: the reference apps' runs on a relay, under real servers and a real HTTP client.

`POST /runs` starts a run and answers its key, `GET /runs/{key}/stream` streams it
and resumes after `Last-Event-ID`, `POST /runs/{key}/cancel` stops it. The apps'
relay is a `MemoryRelay`: one process. Under gunicorn's four sync workers a key is
known to one worker only, so the tests that follow one run skip that setup (its 404
is what the unknown-key test checks).
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from adapters.shared import RedactRunKeys
from httpx_sse import connect_sse

from callstream.testing import OpenAIServer
from tests.helpers import dump_dom
from tests.web.servers import AppServer
from tests.web.test_apps import tag
from tests.web.test_bad_requests import JSON, check_error

Event = tuple[str, str, Any]  # (event name, id, data)


def one_process(app: AppServer) -> None:
    if app.name == "flask-gunicorn-sync":
        pytest.skip("four worker processes, each with its own MemoryRelay: a key is known to one of them")


def start(app: AppServer, **body: Any) -> str:
    response = httpx.post(app.url + "/runs", json=body, timeout=10)
    assert response.status_code == 202, response.text
    started = response.json()
    key = started["key"]
    assert len(key) == 22 and set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert started["stream"] == f"/runs/{key}/stream" and started["cancel"] == f"/runs/{key}/cancel"
    assert started["status"] in ("queued", "running", "completed", "interrupted")
    return str(key)


def read(app: AppServer, key: str, last_event_id: str | None = None) -> list[Event]:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    with (
        httpx.Client(timeout=20) as client,
        connect_sse(client, "GET", f"{app.url}/runs/{key}/stream", headers=headers) as source,
    ):
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [(e.event, e.id, json.loads(e.data)) for e in frames(source.iter_sse())]


def frames(events: Iterator[Any]) -> Iterator[Any]:
    """The events a browser dispatches: not the `retry:` frame that opens the stream (no data)."""
    return (e for e in events if e.data or e.event != "message")


def text_of(events: list[Event]) -> str:
    return "".join(d["text"] for name, _, d in events if name == "token")


def test_a_run_streams_with_ids_and_resumes_after_any_of_them(app: AppServer) -> None:
    one_process(app)
    key = start(app, agent="chain", q="[[tokens=12,delay_ms=1]] hi")
    events = read(app, key)
    assert events[-1][0] == "done" and events[-1][2]["status"] == "completed"
    ids = [int(i) for _, i, _ in events[:-1]]  # every relay event has its position
    assert ids == sorted(set(ids)) and ids[0] >= 1
    assert text_of(events).count(" ") >= 11  # twelve words
    # a reconnect after any event gets exactly the rest: nothing repeated, nothing skipped
    # (`done` carries no id: httpx-sse, like a browser, reports the last id seen before it)
    for cut in range(len(events) - 1):
        rest = read(app, key, events[cut][1])
        assert rest[:-1] == events[cut + 1 : -1] and rest[-1][::2] == events[-1][::2], cut
    assert read(app, key) == events  # a second watcher, from the start


def test_a_second_watcher_joins_a_run_that_goes_on(app: AppServer) -> None:
    one_process(app)
    key = start(app, agent="chain", q="[[tokens=30,delay_ms=10]] hi")
    with (
        httpx.Client(timeout=20) as client,
        connect_sse(client, "GET", f"{app.url}/runs/{key}/stream") as first,
    ):
        seen = []
        for event in frames(first.iter_sse()):
            seen.append((event.event, event.id, json.loads(event.data)))
            if len(seen) == 3:
                second = read(app, key, seen[-1][1])  # a second tab joins mid-answer; reads to the end
        assert seen[3:] == second and seen[-1][2] == {"status": "completed"}


def test_an_unknown_key_is_a_404_that_names_the_other_worker_processes(app: AppServer) -> None:
    for method, path in [
        ("GET", f"/runs/{secrets.token_urlsafe(16)}/stream"),
        ("POST", f"/runs/{secrets.token_urlsafe(16)}/cancel"),
        ("GET", "/runs/not!a~key/stream"),
        ("GET", "/runs/" + "k" * 201 + "/stream"),
    ]:
        error = check_error(httpx.request(method, app.url + path, timeout=10), 404, "run_not_found")
        if "not!a" not in path and "kkk" not in path:
            assert "another worker process" in error["message"] and "RedisRelay" in error["message"]
            assert path.split("/")[2] not in error["message"]  # a key is a secret: never echoed in full


@pytest.mark.parametrize("last", ["999999", "abc", "-1", "1.5", "1e3", "٣", "1 2"])
def test_a_stale_or_malformed_last_event_id_is_an_error_event(app: AppServer, last: str) -> None:
    # An EventSource drops a non-200 answer without a word: a 200 whose one event says why.
    one_process(app)
    check_stale_id(app, start(app, agent="chain", q="[[tokens=3,delay_ms=1]] hi"), last)


def check_stale_id(app: AppServer, key: str, last: str) -> None:
    """The run's stream with `Last-Event-ID: last` is a 200 whose one event is a `StreamGap` error."""
    headers = [(b"Last-Event-ID", last.encode("utf-8"))]
    response = httpx.get(f"{app.url}/runs/{key}/stream", headers=headers, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("retry: ")
    (frame,) = [f for f in response.text.split("\n\n") if f.startswith("event:")]
    name, data = frame.split("\n")
    assert name == "event: error" and "id:" not in frame
    error = json.loads(data.removeprefix("data: "))
    assert error["type"] == "StreamGap" and "gone" in error["message"]


def test_cancel_stops_the_run_and_its_model(app: AppServer, openai_server: OpenAIServer) -> None:
    one_process(app)
    t = tag()
    key = start(app, agent="chain", q=f"[[tokens=5000,delay_ms=2,tag={t}]] hi")
    with (
        httpx.Client(timeout=20) as client,
        connect_sse(client, "GET", f"{app.url}/runs/{key}/stream") as source,
    ):
        events = frames(source.iter_sse())
        first = next(e for e in events if e.event == "token")
        t_cancel = time.monotonic()
        cancelled = client.post(f"{app.url}/runs/{key}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["status"] in ("running", "cancelled")
        rest = [(e.event, json.loads(e.data)) for e in events]
    assert int(first.id) >= 1 and rest[-1] == ("done", {"status": "cancelled"})
    assert len(rest) < 1000
    row = openai_server.wait_ended(t, timeout=10)[0]  # the model's HTTP request was closed
    assert row["disconnected"] and not row["done"] and row["t_end"] - t_cancel < 2
    again = httpx.post(f"{app.url}/runs/{key}/cancel", timeout=10)  # idempotent
    assert again.status_code == 202 and again.json() == {"status": "cancelled"}
    assert read(app, key)[-1][2] == {"status": "cancelled"}  # a late watcher sees how it ended


def test_the_approval_flow_through_runs(app: AppServer) -> None:
    one_process(app)
    thread = f"runs-{tag()}"
    paused = read(app, start(app, agent="approval", q="email", thread=thread))
    names = [n for n, _, _ in paused]
    assert names[-2:] == ["interrupt", "done"] and paused[-1][2] == {"status": "interrupted"}
    resumed = read(app, start(app, agent="approval", thread=thread, decision="approve"))  # a new run, a new key
    assert resumed[-1][2] == {"status": "completed"} and "interrupt" not in [n for n, _, _ in resumed]
    assert text_of(resumed) == "The answer is email to otters sent."


BAD_RUNS: list[tuple[str, str, dict[str, Any], int, str, str | None]] = [
    # (method, path, httpx kwargs, status, code, param)
    ("POST", "/runs", {"json": []}, 400, "invalid_type", None),
    ("POST", "/runs", {"json": {}}, 400, "missing_required_parameter", "agent"),
    ("POST", "/runs", {"json": {"agent": "shell"}}, 400, "invalid_value", "agent"),
    ("POST", "/runs", {"json": {"agent": 1}}, 400, "invalid_type", "agent"),
    ("POST", "/runs", {"json": {"agent": "chain", "q": 5}}, 400, "invalid_type", "q"),
    ("POST", "/runs", {"json": {"agent": "chain", "q": "x" * 4001}}, 400, "string_above_max_length", "q"),
    ("POST", "/runs", {"json": {"agent": "chain", "model": "m"}}, 400, "unknown_parameter", "model"),
    ("POST", "/runs", {"json": {"agent": "chain", "thread": "t1"}}, 400, "invalid_value", "thread"),
    ("POST", "/runs", {"json": {"agent": "agent", "decision": "approve"}}, 400, "invalid_value", "decision"),
    ("POST", "/runs", {"json": {"agent": "approval"}}, 400, "missing_required_parameter", "thread"),
    ("POST", "/runs", {"json": {"agent": "approval", "thread": "a/b"}}, 400, "invalid_value", "thread"),
    (
        "POST",
        "/runs",
        {"json": {"agent": "approval", "thread": "t", "decision": "yes"}},
        400,
        "invalid_value",
        "decision",
    ),
    ("POST", "/runs", {"content": b'{"agent": ', "headers": JSON}, 400, "invalid_json", None),
    ("POST", "/runs", {"data": {"agent": "chain"}}, 415, "unsupported_media_type", None),
    ("GET", "/runs", {}, 405, "method_not_allowed", None),
    ("DELETE", "/runs/k1/cancel", {}, 405, "method_not_allowed", None),
    ("GET", "/runs/k1/cancel", {}, 405, "method_not_allowed", None),
    ("POST", "/runs/k1/stream", {}, 405, "method_not_allowed", None),
]


@pytest.mark.parametrize(("method", "path", "kw", "status", "code", "param"), BAD_RUNS)
def test_run_routes_check_their_input(
    app: AppServer, method: str, path: str, kw: dict[str, Any], status: int, code: str, param: str | None
) -> None:
    check_error(httpx.request(method, app.url + path, timeout=10, **kw), status, code, param)


@pytest.fixture(scope="module", params=["flask-gunicorn-gthread", "fastapi-uvicorn"])
def small_app(request: pytest.FixtureRequest, openai_server: OpenAIServer) -> Iterator[AppServer]:
    server = AppServer(str(request.param), openai_server.base_url, env={"CALLSTREAM_MAX_RUNS": "2"}).start()
    yield server
    server.stop()


def test_too_many_runs_is_a_429(small_app: AppServer) -> None:
    for _ in range(2):
        start(small_app, agent="chain", q="[[tokens=2,delay_ms=1]] hi")
    response = httpx.post(small_app.url + "/runs", json={"agent": "chain"}, timeout=10)
    error = check_error(response, 429, "too_many_runs")
    assert "max_runs=2" in error["message"]


def test_access_logs_show_a_run_key_shortened() -> None:
    key = secrets.token_urlsafe(16)
    # uvicorn's access record: (client, method, path, http version, status)
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("c", "GET", f"/runs/{key}/stream", "1.1", 200),
        None,
    )
    assert RedactRunKeys().filter(record) and key not in record.getMessage()
    assert f"/runs/{key[:6]}…/stream" in record.getMessage()
    # gunicorn's: a dict of atoms
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(r)s", None, None)
    record.args = {"r": f"POST /runs/{key}/cancel HTTP/1.1", "s": 202}
    assert RedactRunKeys().filter(record) and key not in record.getMessage()
    assert quote(key) not in record.getMessage()


class DroppingProxy:
    """A TCP proxy in front of an app that cuts the first `GET /runs/…/stream` connection
    after `after` token events, as a load balancer or a network change does; it keeps the
    request head of every stream request (to see the browser's `Last-Event-ID`)."""

    def __init__(self, upstream_port: int, after: int) -> None:
        self.upstream_port = upstream_port
        self.after = after
        self.heads: list[bytes] = []
        self.dropped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._down, args=(client,), name="proxy-conn", daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, stream: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if data.startswith(b"GET /runs/"):
                    self.heads.append(data)
                    stream.set()
                upstream.sendall(data)

    def _down(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        stream = threading.Event()
        threading.Thread(target=self._up, args=(client, upstream, stream), name="proxy-up", daemon=True).start()
        tokens = 0
        with contextlib.suppress(OSError), client, upstream:
            while data := upstream.recv(65536):
                client.sendall(data)
                if stream.is_set() and not self.dropped.is_set():
                    tokens += data.count(b"event: token")
                    if tokens >= self.after:  # mid-answer: the connection is gone
                        self.dropped.set()
                        client.shutdown(socket.SHUT_RDWR)
                        return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.listener.close()


@pytest.mark.parametrize("app", ["fastapi-uvicorn", "flask-gunicorn-gthread"], indirect=True)
def test_the_page_reconnects_by_itself_and_shows_the_answer_once_in_headless_chromium(
    app: AppServer, tmp_path: Any
) -> None:
    proxy = DroppingProxy(app.port, after=5)
    try:
        dom, stderr = dump_dom(
            proxy.url + "/?autorun=1&agent=chain&q=" + quote("[[tokens=40,delay_ms=20]] hi"), tmp_path
        )
    finally:
        proxy.close()
    assert "done: completed" in dom, stderr[-2000:] + dom[-2000:]
    assert proxy.dropped.is_set() and 'data-resumes="1"' in dom
    first, second = proxy.heads  # the browser's own EventSource reconnected, with the last id it got
    assert b"last-event-id" not in first.lower()
    resumed_after = re.search(rb"(?im)^last-event-id: *(\d+)\r$", second)
    assert resumed_after is not None and int(resumed_after.group(1)) >= 5
    found = re.search(r'<div id="out" data-key="([^"]+)">(.*?)</div>', dom, re.S)
    assert found is not None, dom[-2000:]
    shown = html.unescape(re.sub(r"<[^>]+>", "", found.group(2)))
    assert shown == text_of(read(app, found.group(1)))  # the whole answer, exactly once
    assert shown.count(" ") >= 39
