"""Issue 17: the reference apps' runs on a relay, under real servers and a real HTTP client.

`POST /runs` starts a run and answers its key, `GET /runs/{key}/stream` streams it
and resumes after `Last-Event-ID`, `POST /runs/{key}/cancel` stops it. The apps'
relay is a `MemoryRelay`: one process. Under gunicorn's four sync workers a key is
known to one worker only, so the tests that follow one run skip that setup (its 404
is what the unknown-key test checks).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from httpx_sse import connect_sse

from adapters.shared import RedactRunKeys
from callstream.testing import OpenAIServer
from tests.web.conftest import AppServer
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
    assert started["status"] in ("running", "completed", "interrupted")
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
        assert read(app, key, events[cut][1])[:-1] == events[cut + 1 : -1], cut
        assert read(app, key, events[cut][1])[-1][::2] == events[-1][::2]
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
    key = start(app, agent="chain", q="[[tokens=3,delay_ms=1]] hi")
    headers = {"Last-Event-ID": last.encode("utf-8")}
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


@pytest.fixture(scope="module", params=["flask-gunicorn-gthread", "fastapi-uvicorn", "django-gunicorn-gthread"])
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
