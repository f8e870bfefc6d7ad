"""The reference apps' approval flow (human in the loop) under real servers: routes, and the page in Chromium."""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from tests.helpers import dump_dom
from tests.web.servers import MAX_BODY, AppServer
from tests.web.test_bad_requests import JSON, check_error

_threads = itertools.count()


def new_thread() -> str:
    return f"web-{os.getpid()}-{next(_threads)}"


def events(app: AppServer, method: str, path: str, **kw: Any) -> list[tuple[str, Any]]:
    with httpx.Client(timeout=20) as client, connect_sse(client, method, app.url + path, **kw) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [(e.event, json.loads(e.data)) for e in source.iter_sse()]


def in_one_process(app: AppServer) -> None:
    if app.name == "flask-gunicorn-sync":  # four processes, each with its own in-memory checkpointer
        pytest.skip("a paused thread lives in one worker's memory; use a shared checkpointer behind several")


@pytest.mark.parametrize("choice", ["approve", "reject"])
def test_approval_routes_pause_then_resume(app: AppServer, choice: str) -> None:
    in_one_process(app)
    thread = new_thread()
    paused = events(app, "GET", f"/approval?q=email&thread={thread}")
    names = [n for n, _ in paused]
    assert names[-2:] == ["interrupt", "done"] and paused[-1][1] == {"status": "interrupted"}
    assert "tool_start" not in names and "error" not in names
    (asked,) = paused[-2][1]["interrupts"]
    request = asked["value"]["action_requests"][0]
    assert request["name"] == "send_email" and request["args"] == {"to": "otters", "subject": "otters"}
    assert asked["value"]["review_configs"][0]["allowed_decisions"] == ["approve", "reject"]

    resumed = events(app, "POST", f"/approval/{thread}/decision", json={"decision": choice})
    names = [n for n, _ in resumed]
    text = "".join(d["text"] for n, d in resumed if n == "token")
    assert resumed[-1] == ("done", {"status": "completed"}) and "interrupt" not in names
    if choice == "approve":
        assert names.index("tool_start") < names.index("custom") < names.index("tool_end")
        assert text == "The answer is email to otters sent."
    else:
        assert "tool_start" not in names and "rejected on the page" in text


BAD_APPROVAL: list[tuple[str, str, dict[str, Any], int, str, str | None]] = [
    # (method, path, httpx kwargs, status, code, param): the conventions of the other routes
    ("GET", "/approval?q=x&thread=" + "x" * 65, {}, 400, "invalid_value", "thread"),
    ("GET", "/approval?q=x&thread=a%2Fb", {}, 400, "invalid_value", "thread"),
    ("GET", "/approval?q=x", {}, 400, "missing_required_parameter", "thread"),
    ("POST", "/approval/t1/decision", {"json": {"decision": "maybe"}}, 400, "invalid_value", "decision"),
    ("POST", "/approval/t1/decision", {"json": {}}, 400, "missing_required_parameter", "decision"),
    ("POST", "/approval/t1/decision", {"json": {"decision": "approve", "x": 1}}, 400, "unknown_parameter", "x"),
    ("POST", "/approval/t1/decision", {"json": ["approve"]}, 400, "invalid_type", None),
    ("POST", "/approval/t1/decision", {"content": b"{", "headers": JSON}, 400, "invalid_json", None),
    ("POST", "/approval/t1/decision", {"data": {"decision": "approve"}}, 415, "unsupported_media_type", None),
    ("POST", "/approval/" + "x" * 65 + "/decision", {"json": {"decision": "approve"}}, 400, "invalid_value", "thread"),
    ("GET", "/approval/t1/decision", {}, 405, "method_not_allowed", None),
    ("PUT", "/approval/t1/decision", {"json": {"decision": "approve"}}, 405, "method_not_allowed", None),
    ("POST", "/approval?thread=t1", {"json": {}}, 405, "method_not_allowed", None),
    ("DELETE", "/approval?thread=t1", {}, 405, "method_not_allowed", None),
]


@pytest.mark.parametrize(("method", "path", "kw", "status", "code", "param"), BAD_APPROVAL)
def test_approval_routes_check_their_input(
    app: AppServer, method: str, path: str, kw: dict[str, Any], status: int, code: str, param: str | None
) -> None:
    response = httpx.request(method, app.url + path, timeout=10, **kw)
    check_error(response, status, code, param)
    if status == 405:  # with Allow, naming the route's own method
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert method not in allowed and ("POST" if "decision" in path else "GET") in allowed


def test_approval_decision_body_over_the_limit_is_413(app: AppServer) -> None:
    big = json.dumps({"decision": "approve", "pad": "x" * MAX_BODY})
    response = httpx.post(app.url + "/approval/t1/decision", content=big, headers=JSON, timeout=10)
    check_error(response, 413, "request_too_large")


@pytest.mark.parametrize("app", ["fastapi-uvicorn"], indirect=True)
@pytest.mark.parametrize("choice", ["approve", "reject"])
def test_page_shows_the_question_and_the_click_resumes_in_headless_chromium(
    app: AppServer, tmp_path: Any, choice: str
) -> None:
    # `decide` makes the page click the button itself once the question is shown.
    url = app.url + f"/?autorun=1&agent=approval&q=email&decide={choice}"
    dom, stderr = dump_dom(url, tmp_path)
    assert "done: completed" in dom, stderr[-2000:] + dom[-2000:]
    assert 'Allow send_email({"to":"otters","subject":"otters"})?' in dom  # the question was shown
    if choice == "approve":
        assert "→ send_email" in dom and '· send_email: {"progress":"sending"}' in dom
        assert "The answer is email to otters sent." in dom
    else:
        assert "→ send_email" not in dom and "rejected on the page" in dom
