"""Issue 12: every bad request to every route of every app is a 4xx with a JSON error body.

One server process per setup (tests/web/conftest.py), many requests: the same
table of bad requests runs against Flask and Django on gunicorn, Django and
FastAPI on uvicorn. Bodies in the OpenAI error shape:
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from callstream.testing import OpenAIServer
from tests.web.servers import MAX_BODY, AppServer
from tests.web.test_apps import tag

CHAT = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}
OK: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def body(**changes: Any) -> dict[str, Any]:
    """A valid request with some fields changed (a value of ... removes the field)."""
    out = {**OK, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def user(content: Any) -> dict[str, Any]:
    return body(messages=[{"role": "user", "content": content}])


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}

# (id, JSON value or raw bytes, status, code, param)
BAD_BODIES: list[tuple[str, Any, int, str | None, str | None]] = [
    ("array", [], 400, "invalid_type", None),
    ("null", None, 400, "invalid_type", None),
    ("string", "hi", 400, "invalid_type", None),
    ("number", 3, 400, "invalid_type", None),
    ("empty-body", b"", 400, "invalid_json", None),
    ("malformed", b'{"model": "m", "messages": [', 400, "invalid_json", None),
    ("not-utf8", b'{"model": "\xff\xfe"}', 400, "invalid_json", None),
    ("utf16", json.dumps(OK).encode("utf-16"), 400, "invalid_json", None),
    ("nan", b'{"model": "m", "messages": [], "temperature": NaN}', 400, "invalid_json", None),
    ("huge-int", b'{"model": "m", "n": ' + b"9" * 5000 + b"}", 400, "invalid_json", None),
    ("deep", b"[" * 5000 + b"]" * 5000, 400, None, None),
    ("lone-surrogate", b'{"model": "m", "messages": [{"role": "user", "content": "\\ud83d"}]}', 400, None, None),
    ("no-messages", body(messages=...), 400, "missing_required_parameter", "messages"),
    ("no-model", body(model=...), 400, "missing_required_parameter", "model"),
    ("model-number", body(model=123), 400, "invalid_type", "model"),
    ("messages-string", body(messages="hi"), 400, "invalid_type", "messages"),
    ("messages-object", body(messages={"role": "user"}), 400, "invalid_type", "messages"),
    ("messages-numbers", body(messages=[1, 2]), 400, "invalid_type", "messages[0]"),
    ("messages-empty", body(messages=[]), 400, "empty_array", "messages"),
    ("no-role", body(messages=[{"content": "x"}]), 400, "missing_required_parameter", "messages[0].role"),
    ("bad-role", body(messages=[{"role": "bot", "content": "x"}]), 400, "invalid_value", "messages[0].role"),
    ("role-number", body(messages=[{"role": 1, "content": "x"}]), 400, "invalid_type", "messages[0].role"),
    ("no-content", body(messages=[{"role": "user"}]), 400, "missing_required_parameter", "messages[0].content"),
    ("content-number", user(5), 400, "invalid_type", "messages[0].content"),
    ("content-empty-list", user([]), 400, "empty_array", "messages[0].content"),
    ("part-text-number", user([{"type": "text", "text": 5}]), 400, "invalid_type", "messages[0].content[0].text"),
    ("part-no-type", user([{"text": "x"}]), 400, "missing_required_parameter", "messages[0].content[0].type"),
    ("part-bad-type", user([{"type": "video", "video": {}}]), 400, "invalid_value", "messages[0].content[0].type"),
    ("part-string", user(["x"]), 400, "invalid_type", "messages[0].content[0]"),
    ("image-no-url", user([{"type": "image_url", "image_url": {}}]), 400, None, "messages[0].content[0].image_url.url"),
    ("system-image", body(messages=[{"role": "system", "content": [{"type": "image_url"}]}]), 400, None, None),
    ("message-extra-key", body(messages=[{"role": "user", "content": "x", "x": 1}]), 400, "unknown_parameter", None),
    ("assistant-empty", body(messages=[{"role": "assistant"}]), 400, "missing_required_parameter", None),
    ("tool-unanswered", body(messages=[{"role": "tool", "content": "r", "tool_call_id": "c1"}]), 400, None, None),
    (
        "tool-no-id",
        body(messages=[{"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "content": "r"}]),
        400,
        "missing_required_parameter",
        "messages[1].tool_call_id",
    ),
    (
        "call-no-answer",
        body(messages=[{"role": "assistant", "tool_calls": [CALL]}, {"role": "user", "content": "x"}]),
        400,
        None,
        "messages[0].tool_calls",
    ),
    ("call-bad", body(messages=[{"role": "assistant", "tool_calls": [{"id": "c1"}]}]), 400, None, None),
    ("stream-string", body(stream="yes"), 400, "invalid_type", "stream"),
    ("stream-options-no-stream", body(stream_options={"include_usage": True}), 400, None, "stream_options"),
    ("stream-options-list", body(stream=True, stream_options=[]), 400, "invalid_type", "stream_options"),
    ("include-usage-number", body(stream=True, stream_options={"include_usage": 1}), 400, "invalid_type", None),
    ("stream-options-unknown", body(stream=True, stream_options={"x": 1}), 400, "unknown_parameter", None),
    ("n-2", body(n=2), 400, "unsupported_parameter", "n"),
    ("n-0", body(n=0), 400, "integer_below_min_value", "n"),
    ("n-bool", body(n=True), 400, "invalid_type", "n"),
    ("max-tokens-string", body(max_tokens="5"), 400, "invalid_type", "max_tokens"),
    ("max-tokens-0", body(max_tokens=0), 400, "integer_below_min_value", "max_tokens"),
    ("max-tokens-float", body(max_tokens=2.5), 400, "invalid_type", "max_tokens"),
    ("temperature-3", body(temperature=3), 400, "decimal_above_max_value", "temperature"),
    ("temperature-string", body(temperature="hot"), 400, "invalid_type", "temperature"),
    ("top-p-negative", body(top_p=-0.5), 400, "decimal_below_min_value", "top_p"),
    ("stop-five", body(stop=["a", "b", "c", "d", "e"]), 400, None, "stop"),
    ("stop-number", body(stop=5), 400, "invalid_type", "stop"),
    ("tools", body(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "unsupported_parameter", "tools"),
    ("tool-choice", body(tool_choice="required"), 400, "unsupported_parameter", "tool_choice"),
    ("functions", body(functions=[{"name": "f"}]), 400, "unsupported_parameter", "functions"),
    ("logprobs", body(logprobs=True), 400, "unsupported_parameter", "logprobs"),
    ("audio", body(modalities=["text", "audio"]), 400, "unsupported_parameter", "modalities"),
    ("store", body(store=True), 400, "unsupported_parameter", "store"),
    ("response-format", body(response_format={"type": "xml"}), 400, "invalid_value", "response_format.type"),
    ("logit-bias", body(logit_bias={"x": 1}), 400, None, "logit_bias"),
    ("unknown-param", body(foo=1), 400, "unknown_parameter", "foo"),
]


def _content(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def check_error(
    response: httpx.Response, status: int, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The response is `status` with an OpenAI-shaped JSON error, and nothing it should not hold."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    for leak in ("Traceback", 'File "', "/site-packages/", "<html", "<!doctype"):
        assert leak.lower() not in response.text.lower(), response.text
    return dict(error)


@pytest.fixture(scope="session")
def _clients() -> Iterator[dict[str, httpx.Client]]:
    clients: dict[str, httpx.Client] = {}
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def http(app: AppServer, _clients: dict[str, httpx.Client]) -> httpx.Client:
    """One keep-alive client per server (making an httpx client costs more than a request)."""
    if app.name not in _clients:
        _clients[app.name] = httpx.Client(base_url=app.url, timeout=10)
    return _clients[app.name]


@pytest.mark.parametrize(("case", "value", "status", "code", "param"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_chat_body_is_a_json_400(
    http: httpx.Client, case: str, value: Any, status: int, code: str | None, param: str | None
) -> None:
    check_error(http.post(CHAT, content=_content(value), headers=JSON), status, code, param)


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/x-www-form-urlencoded", 415),
        ("text/plain", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/json; charset=latin-1", 415),
        ("application/json; charset=utf-8", 200),
        ("application/json", 200),
    ],
)
def test_content_type(http: httpx.Client, content_type: str, status: int) -> None:
    response = http.post(CHAT, content=_content(OK), headers={"Content-Type": content_type})
    if status == 200:
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"]
    else:
        check_error(response, status, "unsupported_media_type")


def test_form_encoded_body_from_a_form(http: httpx.Client) -> None:
    # what `curl -d` or an HTML form sends
    check_error(http.post(CHAT, data={"model": "m", "messages": "hi"}), 415, "unsupported_media_type")


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    big = body(messages=[{"role": "user", "content": "x" * MAX_BODY}])
    check_error(http.post(CHAT, content=_content(big), headers=JSON), 413, "request_too_large")


def test_chunked_body_over_the_limit_is_413(http: httpx.Client) -> None:
    # no Content-Length: the limit is applied as the body is read
    big = _content(body(messages=[{"role": "user", "content": "x" * MAX_BODY}]))
    chunks = iter([big[i : i + 8192] for i in range(0, len(big), 8192)])
    check_error(http.post(CHAT, content=chunks, headers=JSON), 413, "request_too_large")


def test_chunked_body_within_the_limit_is_read(http: httpx.Client) -> None:
    raw = _content(OK)
    response = http.post(CHAT, content=iter([raw[:10], raw[10:]]), headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "".join(f"w{i} " for i in range(20))


ROUTES = {"/": "GET", "/health": "GET", "/stream": "GET", "/agent": "GET", CHAT: "POST"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", CHAT),
        ("PUT", CHAT),
        ("DELETE", CHAT),
        ("POST", "/stream"),
        ("POST", "/agent"),
        ("PUT", "/health"),
        ("POST", "/"),
        ("PATCH", "/stream"),
    ],
)
def test_wrong_method_is_405_with_allow(http: httpx.Client, method: str, path: str) -> None:
    response = http.request(method, path + "?q=x", content=b"{}", headers=JSON)
    check_error(response, 405, "method_not_allowed")
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert ROUTES[path] in allowed and method not in allowed


@pytest.mark.parametrize("path", ["/nope", "/v1/chat/completions/", "/v1/completions", "/stream/x", "/%ff", "/..%2f"])
def test_unknown_route_is_404(http: httpx.Client, path: str) -> None:
    check_error(http.get(path), 404, "not_found")
    check_error(http.post(path, content=b"{}", headers=JSON), 404, "not_found")


@pytest.mark.parametrize("path", ["/stream", "/agent", "/", "/health"])
def test_head_is_not_an_error(http: httpx.Client, openai_server: OpenAIServer, path: str) -> None:
    t = tag()
    response = http.head(path + "?q=" + quote(f"[[tag={t}]]"))
    assert response.status_code == 200 and response.content == b""
    if path == "/stream":  # the headers only: no run started for them
        after = tag()
        assert http.get("/stream?q=" + quote(f"[[tokens=1,tag={after}]]")).status_code == 200
        openai_server.wait_ended(after)
        assert openai_server.stats(t) == []


@pytest.mark.parametrize("q", ["%ff%fe", "%00", "a" * 3000, "%F0%9F%98", "[[tokens=2]]&q=second"])
def test_odd_query_strings_stream(http: httpx.Client, q: str) -> None:
    # non-UTF-8 escapes become U+FFFD (each framework decodes with errors="replace"); no 4xx/5xx
    response = http.get("/stream?q=" + q)
    assert response.status_code == 200, response.text[:300]
    assert response.text.rstrip().endswith('data: {"status": "completed"}'), response.text[-300:]


def raw_request(app: AppServer, head: bytes, parts: list[bytes], *, half_close: bool = False) -> bytes:
    """Send a request by hand (in pieces, optionally half-closing), and read what comes back."""
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(head)
        for part in parts:
            sock.sendall(part)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            if half_close is False and b"\r\n\r\n" in data:
                head_end = data.index(b"\r\n\r\n")
                length = [
                    int(line.split(b":")[1])
                    for line in data[:head_end].split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(data) >= head_end + 4 + length[0]:
                    break
        return data


def _head(app: AppServer, length: int, close: bool = True) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return (
        (
            f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{app.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n"
        ).encode()
        + connection
        + b"\r\n"
    )


def test_slow_client_body_in_pieces(app: AppServer) -> None:
    raw = _content(OK)
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    data = raw_request(app, _head(app, len(raw)), pieces)
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    assert b'"finish_reason": "stop"' in data


def test_half_closed_client_with_a_short_body(app: AppServer) -> None:
    # announces 200 bytes, sends 20, half-closes: a 400 if the server still answers, never a 5xx
    data = raw_request(app, _head(app, 200), [_content(OK)[:20]], half_close=True)
    if data:
        status = int(data.split(b" ", 2)[1])
        assert status == 400, data[:500]
        assert b'"incomplete_body"' in data or b'"invalid_json"' in data, data[:500]
    assert app.health()["status"] == "ok"


def test_client_reset_mid_body_leaves_the_server_healthy(app: AppServer) -> None:
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", app.port), timeout=10)
        sock.sendall(_head(app, 10_000, close=False) + b'{"model": "m", "mess')
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    deadline = time.monotonic() + 5
    while app.health()["open_streams"] and time.monotonic() < deadline:
        time.sleep(0.02)
    health = app.health()
    assert health["status"] == "ok" and health["open_streams"] == 0


def test_model_failure_without_streaming_is_a_json_500(http: httpx.Client) -> None:
    # not a bad request: the upstream answers 500; the client gets JSON, no traceback, no upstream text
    response = http.post(CHAT, json=user("[[status=500]]"))
    error = check_error(response, 500, "model_error")
    assert "scripted" not in error["message"]


EXPECTED_LOGS = ("the chain failed", "stream failed after the response started")
CHAINED = ("The above exception was the direct cause", "During handling of the above exception")


def test_no_unexpected_traceback_in_the_server_log(app: AppServer) -> None:
    # runs after the table above: a bad request was answered, never crashed a view (which logs a traceback);
    # the only tracebacks are the ones the apps log on purpose, for a model that failed
    lines = [line for line in app.log.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            before = lines[i - 1] if i else ""
            if not before.startswith(CHAINED):
                assert any(e in before for e in EXPECTED_LOGS), "\n".join(lines[max(0, i - 3) : i + 30])


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/stream?q=x&" + "a&" * 1100, {}),
        ("/health", {"Host": "evil.example"}),
        ("/stream?q=x", {"Host": "evil.example"}),
    ],
    ids=["too-many-query-fields", "unknown-host", "unknown-host-stream"],
)
def test_requests_a_framework_refuses_are_json(http: httpx.Client, path: str, headers: dict[str, str]) -> None:
    # Django refuses more than 1000 query fields and hosts outside ALLOWED_HOSTS (a 400, JSON like the rest);
    # Flask and FastAPI take them
    response = http.get(path, headers=headers)
    if response.status_code != 200:
        check_error(response, 400)
