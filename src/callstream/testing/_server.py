"""A local OpenAI-compatible chat-completions server for tests (standard library only).

Point any OpenAI client (the `openai` SDK, `langchain-openai`'s `ChatOpenAI`,
an app under test) at `OpenAIServer().start().base_url`, or serve one from the
command line: `python -m callstream.testing.openai_server --port 8000`.

Behaviour is chosen per request through the model name, e.g.
`"scripted:tokens=50,delay_ms=2,ttft_ms=0,fail_after=10,tag=t1"`, over the
server's defaults (`OpenAIServer(tokens=5)`, or `--tokens 5`):

- `tokens`: how many content chunks to stream (`"w0 w1 ..."`), default 20;
- `prefix`: the tokens' prefix instead of `w`;
- `delay_ms` between chunks, `ttft_ms` before the first one;
- `fail_after`: after that many chunks, send an SSE `error` and close;
- `status`: answer with that HTTP error status instead (401, 500...);
- `tag`: a label to find the request in `/stats`.

Usage is reported as 5 prompt tokens and one completion token per chunk: in
the response without streaming, and in a last chunk with empty `choices` when
the request asks for it (`stream_options.include_usage`).

Options in the first user message, as `[[tokens=5,tag=x]]`, override those.

With `tools` in the request and no tool result in the conversation, it calls
the first tool (arguments made from its JSON schema), streamed as tool-call
deltas; once a tool result is present it answers
`"The answer is <result>."`. `GET /stats` lists, per request: tag, chunks
sent, whether the client disconnected, and monotonic start/end times.
`POST /llama/<options>/completion` speaks the llama.cpp / llamafile protocol.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

__all__ = ("OPTIONS", "OpenAIServer", "main")

#: the per-request options, each also a server default (`OpenAIServer(**defaults)`, `--name`)
OPTIONS = ("tokens", "prefix", "delay_ms", "ttft_ms", "fail_after", "status")


def _options(model: str) -> dict[str, str]:
    _, _, spec = model.partition(":")
    opts = {}
    for part in filter(None, spec.split(",")):
        key, _, value = part.partition("=")
        opts[key.strip()] = value.strip()
    return opts


def _message_options(messages: list[dict[str, Any]]) -> dict[str, str]:
    """Options written in the first user message as `[[tokens=5,tag=x]]` (they win):
    lets a test steer a server behind an app whose model name is fixed."""
    for m in messages:
        content = m.get("content")
        if m.get("role") == "user" and isinstance(content, str) and "[[" in content:
            return _options(":" + content.split("[[", 1)[1].split("]]", 1)[0])
    return {}


def _args_for(schema: dict[str, Any]) -> dict[str, Any]:
    samples = {"integer": 2, "number": 2.5, "string": "otters", "boolean": True}
    props = schema.get("properties", {})
    return {name: samples.get(p.get("type", "string"), "x") for name, p in props.items()}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: OpenAIServer

    def log_message(self, format: str, *args: Any) -> None:  # silence
        pass

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/stats":
            tag = parse_qs(url.query).get("tag", [None])[0]
            with self.server.lock:
                rows = [dict(r) for r in self.server.requests if tag is None or r["tag"] == tag]
            self._json(200, rows)
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        path = urlparse(self.path).path
        opts = dict(self.server.defaults)
        if path.endswith("/completion"):  # the llama.cpp / llamafile protocol
            opts.update(_options(":" + path.rsplit("/", 2)[-2]))
            body["stream"] = body.get("stream", False)
            body["llamacpp"] = True
        elif path == "/v1/chat/completions":
            opts.update(_options(body.get("model", "")))
            opts.update(_message_options(body.get("messages", [])))
        else:
            self._json(404, {"error": {"message": "not found"}})
            return
        row: dict[str, Any] = {
            "tag": opts.get("tag"),
            "sent": 0,
            "disconnected": False,
            "done": False,
            "t_start": time.monotonic(),
            "t_end": None,
            "stream": bool(body.get("stream")),
        }
        with self.server.lock:
            self.server.requests.append(row)
        try:
            self._respond(body, opts, row)
        except (BrokenPipeError, ConnectionResetError):
            row["disconnected"] = True
        finally:
            row["t_end"] = time.monotonic()

    def _plan(self, body: dict[str, Any], opts: dict[str, str]) -> tuple[list[str], list[dict[str, Any]]]:
        """The content pieces and tool calls this request answers with."""
        messages = body.get("messages", [])
        tools = body.get("tools") or []
        results = [m for m in messages if m.get("role") == "tool"]
        if tools and not results:
            fn = tools[0]["function"]
            args = json.dumps(_args_for(fn.get("parameters", {})))
            # `preamble=Let me check.`: text streamed before the tool call, as models do
            preamble = opts.get("preamble", "")
            words = preamble.split(" ") if preamble else []
            return [w + " " for w in words], [{"id": "call_1", "name": fn["name"], "arguments": args}]
        if results:
            text = f"The answer is {results[-1].get('content')}."
            return [w + " " for w in text.split(" ")[:-1]] + [text.split(" ")[-1]], []
        n = int(opts.get("tokens", 20))
        prefix = opts.get("prefix", "w")
        return [f"{prefix}{i} " for i in range(n)], []

    def _respond(self, body: dict[str, Any], opts: dict[str, str], row: dict[str, Any]) -> None:
        if "status" in opts:
            status = int(opts["status"])
            self._json(status, {"error": {"message": f"scripted {status}", "type": "server_error", "code": status}})
            row["done"] = True
            return
        pieces, calls = self._plan(body, opts)
        model = body.get("model", "scripted")
        if body.get("llamacpp"):
            self._llamacpp(body, pieces, opts, row)
            return
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces) or None}
            if calls:
                message["tool_calls"] = [
                    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in calls
                ]
            self._json(
                200,
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": len(pieces), "total_tokens": 5 + len(pieces)},
                },
            )
            row["sent"] = len(pieces)
            row["done"] = True
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        delay = float(opts.get("delay_ms", 0)) / 1000
        ttft = float(opts.get("ttft_ms", 0)) / 1000
        fail_after = int(opts["fail_after"]) if "fail_after" in opts else None
        if ttft:
            time.sleep(ttft)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        self._send(chunk({"role": "assistant", "content": ""}))
        for i, piece in enumerate(pieces):
            if fail_after is not None and i == fail_after:
                self._send({"error": {"message": "scripted mid-stream failure", "type": "server_error"}})
                self._end()
                return
            if i and delay:
                time.sleep(delay)
            self._send(chunk({"content": piece}))
            row["sent"] += 1
        for i, call in enumerate(calls):
            half = len(call["arguments"]) // 2
            first = {"index": i, "id": call["id"], "type": "function"}
            first["function"] = {"name": call["name"], "arguments": call["arguments"][:half]}
            self._send(chunk({"tool_calls": [first]}))
            self._send(chunk({"tool_calls": [{"index": i, "function": {"arguments": call["arguments"][half:]}}]}))
            row["sent"] += 2
        self._send(chunk({}, "tool_calls" if calls else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):  # as the API: a last chunk, no choices
            n = len(pieces) + 2 * len(calls)
            usage = {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}
            self._send({**chunk({}), "choices": [], "usage": usage})
        self._raw(b"data: [DONE]\n\n")
        self._end()
        row["done"] = True

    def _llamacpp(self, body: dict[str, Any], pieces: list[str], opts: dict[str, str], row: dict[str, Any]) -> None:
        if not body["stream"]:
            self._json(200, {"content": "".join(pieces), "stop": True})
            row["sent"], row["done"] = len(pieces), True
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        delay = float(opts.get("delay_ms", 0)) / 1000
        for i, piece in enumerate(pieces):
            if i and delay:
                time.sleep(delay)
            self._raw(b"data: " + json.dumps({"content": piece, "stop": False}).encode() + b"\n")
            row["sent"] += 1
        self._raw(b"data: " + json.dumps({"content": "", "stop": True}).encode() + b"\n")
        self._end()
        row["done"] = True

    def _send(self, payload: dict[str, Any]) -> None:
        self._raw(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def _raw(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class OpenAIServer(ThreadingHTTPServer):
    """The server, in a daemon thread once started: `OpenAIServer().start()`, then `stop()`.

    Args:
        host: the address to listen on (loopback by default).
        port: the port; 0 picks a free one (see `base_url`).
        **defaults: default request options (`tokens=5`, `delay_ms=10`...; see
            the module docstring), which the model name and the message override.

    Raises:
        ValueError: for an unknown option name.
    """

    daemon_threads = True
    request_queue_size = 256  # the default listen backlog (5) drops bursts of 50 clients

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that left (reset) is what half the tests do on purpose

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **defaults: object) -> None:
        unknown = sorted(set(defaults) - set(OPTIONS))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)}; expected some of {', '.join(OPTIONS)}")
        self.defaults = {key: str(value) for key, value in defaults.items() if value is not None}
        super().__init__((host, port), _Handler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self.serve_forever, name="openai-test-server", daemon=True)

    @property
    def base_url(self) -> str:
        """`http://host:port/v1`, what OpenAI clients take as `base_url`."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> OpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)

    def stats(self, tag: str) -> list[dict[str, Any]]:
        """The rows of `GET /stats` for the requests tagged `tag`."""
        with self.lock:
            return [dict(r) for r in self.requests if r["tag"] == tag]

    def wait_ended(self, tag: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until every request with `tag` has ended (done or disconnected)."""
        end = time.monotonic() + timeout
        while True:
            rows = self.stats(tag)
            if rows and all(r["t_end"] is not None for r in rows):
                return rows
            if time.monotonic() > end:
                raise AssertionError(f"requests tagged {tag!r} did not end: {rows}")
            time.sleep(0.002)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m callstream.testing.openai_server`: serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m callstream.testing.openai_server",
        description="A local OpenAI-compatible chat-completions server with scripted answers, for tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one, printed)")
    parser.add_argument("--tokens", type=int, help="content chunks per answer (default: 20)")
    parser.add_argument("--prefix", help="the chunks' prefix (default: w, as in 'w0 w1 ...')")
    parser.add_argument("--delay-ms", type=float, help="milliseconds between chunks (default: 0)")
    parser.add_argument("--ttft-ms", type=float, help="milliseconds before the first chunk (default: 0)")
    parser.add_argument("--fail-after", type=int, help="send an SSE error after that many chunks")
    parser.add_argument("--status", type=int, help="answer every request with that HTTP error status")
    args = parser.parse_args(argv)
    defaults = {name: getattr(args, name) for name in OPTIONS}
    try:
        server = OpenAIServer(args.host, args.port, **defaults)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(server.base_url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
