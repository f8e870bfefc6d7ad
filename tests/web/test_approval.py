"""The reference apps' approval flow (human in the loop) under real servers: routes, and the page in Chromium."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from tests.web.conftest import AppServer

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


def test_approval_routes_check_their_input(app: AppServer) -> None:
    bad_thread = httpx.get(app.url + "/approval?thread=" + "x" * 65, timeout=10)
    assert bad_thread.status_code == 400 and "thread" in bad_thread.json()["error"]
    bad_decision = httpx.post(app.url + "/approval/t1/decision", json={"decision": "maybe"}, timeout=10)
    assert bad_decision.status_code == 400 and "decision" in bad_decision.json()["error"]


@pytest.mark.parametrize("app", ["fastapi-uvicorn"], indirect=True)
@pytest.mark.parametrize("choice", ["approve", "reject"])
def test_page_shows_the_question_and_the_click_resumes_in_headless_chromium(
    app: AppServer, tmp_path: Any, choice: str
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium not installed (CI installs it)")
    # `decide` makes the page click the button itself once the question is shown.
    url = app.url + f"/?autorun=1&route=/approval&q=email&decide={choice}"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    dom = proc.stdout
    assert "done: completed" in dom, proc.stderr[-2000:] + dom[-2000:]
    assert 'Allow send_email({"to":"otters","subject":"otters"})?' in dom  # the question was shown
    if choice == "approve":
        assert "→ send_email" in dom and '· send_email: {"progress":"sending"}' in dom
        assert "The answer is email to otters sent." in dom
    else:
        assert "→ send_email" not in dom and "rejected on the page" in dom
