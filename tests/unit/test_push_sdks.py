"""from_push / afrom_push against real push-style libraries (RELIABILITY F50, F51).

- websocket-client's `WebSocketApp` (its own thread; on_message/on_error/on_close;
  `close()` as the cancel hook) against a local `websockets` server on 127.0.0.1;
- an asyncio `Protocol` fed by a local TCP server (callbacks on the loop's thread);
- four producer threads emitting at once.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

import callstream
from callstream.sinks import SinkName
from tests.helpers import drain_into, run


def make(face: str, start: Any, **kw: Any) -> Any:
    return callstream.from_push(start, **kw) if face == "sync" else callstream.afrom_push(start, **kw)


@pytest.fixture
def thread_errors() -> Iterator[list[BaseException]]:
    seen: list[BaseException] = []
    previous = threading.excepthook

    def hook(args: Any) -> None:
        seen.append(args.exc_value)
        previous(args)

    threading.excepthook = hook
    yield seen
    threading.excepthook = previous


# -- websocket-client against a local websockets server ---------------------------------


class WSServer:
    """Paths: /count/N sends m0..m{N-1} then closes normally; /endless sends until the
    client leaves; /silent sends two then waits; /abort sends three then drops the TCP
    connection without a close frame. `closed[path]` is set when the server sees the
    client's close."""

    def __init__(self) -> None:
        self.closed: dict[str, threading.Event] = {}
        self.closed_at: dict[str, float] = {}
        self.server: Server = serve(self.handler, "127.0.0.1", 0)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="ws-server", daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        self.closed[path] = threading.Event()
        return f"ws://127.0.0.1:{self.port}{path}"

    def handler(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        try:
            if path.startswith("/count/"):
                for i in range(int(path.rsplit("/", 1)[1])):
                    ws.send(f"m{i}")
                ws.close()
                return
            if path.startswith("/endless"):
                i = 0
                while True:
                    ws.send(f"m{i}")
                    i += 1
                    time.sleep(0.001)
            if path.startswith("/silent"):
                ws.send("m0")
                ws.send("m1")
                ws.recv(timeout=10)  # returns (raises ConnectionClosed) when the client leaves
            if path.startswith("/abort"):
                for i in range(3):
                    ws.send(f"m{i}")
                time.sleep(0.02)
                ws.socket.shutdown(socket.SHUT_RDWR)
                ws.socket.close()
        except ConnectionClosed:
            self.closed_at[path] = time.monotonic()
            self.closed[path].set()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture(scope="module")
def ws_server() -> Iterator[WSServer]:
    server = WSServer()
    yield server
    server.stop()


class WSClient:
    """The recipe from the docs: a WebSocketApp bridged with from_push."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.close_calls = 0
        self.thread: threading.Thread | None = None
        self.app: websocket.WebSocketApp | None = None

    def start(self, push: callstream.Push) -> None:
        def on_error(ws: Any, exc: BaseException) -> None:
            # websocket-client >= 1.9 reports a normal close (code 1000) to on_error too
            if getattr(exc, "status_code", None) != 1000:
                push.fail(exc)

        self.app = websocket.WebSocketApp(
            self.url,
            on_message=lambda ws, msg: push.emit(msg),
            on_error=on_error,
            on_close=lambda ws, code, reason: push.finish(code),
        )
        push.on_cancel(self.close)
        self.thread = threading.Thread(target=self.app.run_forever, name="ws-client", daemon=True)
        self.thread.start()

    def close(self) -> None:
        # Not app.close() from this thread: it closes the socket under run_forever's
        # selector, which then sleeps out its 10 s timeout before the thread ends.
        # abort() (a socket shutdown) wakes run_forever at once; it tears down itself.
        self.close_calls += 1
        app = self.app
        assert app is not None
        app.keep_running = False
        sock = app.sock
        if sock is not None:
            sock.abort()


def test_websocket_all_messages_in_order_then_the_normal_close(face: str, sink: str, ws_server: WSServer) -> None:
    client = WSClient(ws_server.url("/count/200"))
    stream = make(face, client.start, sink=sink, timeout=10)
    got = run(face, stream)
    assert got == [f"m{i}" for i in range(200)]
    assert stream.output == 1000 and client.close_calls == 0
    client.thread.join(2)  # type: ignore[union-attr]
    assert not client.thread.is_alive()  # type: ignore[union-attr]


def test_websocket_break_closes_the_connection_once(face: str, ws_server: WSServer, thread_errors: list[Any]) -> None:
    client = WSClient(ws_server.url("/endless"))
    stream = make(face, client.start, sink="bounded")
    seen: list[Any] = []
    got = run(face, stream, lambda item: seen.append(item) or len(seen) < 10)
    assert got == [f"m{i}" for i in range(10)]
    assert ws_server.closed["/endless"].wait(2)  # the server saw the client's close
    client.thread.join(2)  # type: ignore[union-attr]
    assert not client.thread.is_alive()  # type: ignore[union-attr]
    assert client.close_calls == 1 and not thread_errors


def test_websocket_dropped_connection_is_the_stream_error(face: str, ws_server: WSServer) -> None:
    client = WSClient(ws_server.url("/abort"))
    got: list[Any] = []
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        drain_into(face, make(face, client.start, timeout=10), got)
    assert got == ["m0", "m1", "m2"] and client.close_calls == 0
    client.thread.join(2)  # type: ignore[union-attr]


def test_websocket_that_never_ends_times_out(face: str, ws_server: WSServer, thread_errors: list[Any]) -> None:
    client = WSClient(ws_server.url("/silent"))
    got: list[Any] = []
    with pytest.raises(callstream.StreamTimeout) as info:
        drain_into(face, make(face, client.start, idle_timeout=0.3), got)
    assert info.value.limit == "idle_timeout" and got == ["m0", "m1"]
    assert client.close_calls == 1
    assert ws_server.closed["/silent"].wait(2)
    client.thread.join(2)  # type: ignore[union-attr]
    assert not client.thread.is_alive() and not thread_errors  # type: ignore[union-attr]


# -- an asyncio Protocol fed by a local TCP server ------------------------------------------


class LineProtocol(asyncio.Protocol):
    """Callbacks on the loop's own thread: data_received → emit, connection_lost → finish/fail."""

    def __init__(self, push: callstream.Push) -> None:
        self.push = push
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.push.emit(line.decode())

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.push.finish("eof")
        else:
            self.push.fail(exc)


async def tcp_server(mode: str, seen_close: asyncio.Event, n: int = 500) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if mode == "burst":  # everything at once, then EOF
                writer.write(b"".join(f"l{i}\n".encode() for i in range(n)))
                await writer.drain()
                writer.close()
                return
            if mode == "reset":
                writer.write(b"l0\nl1\n")
                await writer.drain()
                await asyncio.sleep(0.02)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                writer.transport.abort()
                return
            i = 0  # "endless": a line every ms until the client leaves
            while not reader.at_eof():
                writer.write(f"l{i}\n".encode())
                i += 1
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(1), 0.001)
                except TimeoutError:
                    pass
            seen_close.set()
        except ConnectionError:
            seen_close.set()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _loop_errors(loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: errors.append(context))
    return errors


@pytest.mark.parametrize("sink", ["queue", "deque", "bounded"])
def test_asyncio_protocol_burst_nothing_lost_loop_never_blocked(sink: SinkName) -> None:
    async def go() -> None:
        errors = _loop_errors(asyncio.get_running_loop())
        server = await tcp_server("burst", asyncio.Event())
        port = server.sockets[0].getsockname()[1]
        longest = [0.0]
        ticking = True

        async def ticker() -> None:  # measures how long the loop is ever held
            last = time.monotonic()
            while ticking:
                await asyncio.sleep(0.001)
                now = time.monotonic()
                longest[0] = max(longest[0], now - last)
                last = now

        tick = asyncio.get_running_loop().create_task(ticker())

        async def start(push: callstream.Push) -> None:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_connection(lambda: LineProtocol(push), "127.0.0.1", port)
            push.on_cancel(transport.close)

        got = []
        stream = callstream.afrom_push(start, sink=callstream.BoundedSink(8) if sink == "bounded" else sink, timeout=10)
        async with stream as s:
            async for line in s:
                got.append(line)
                if len(got) % 50 == 0:
                    await asyncio.sleep(0.002)  # a slow consumer: the bounded sink fills up
        ticking = False
        await tick
        server.close()
        await server.wait_closed()
        assert got == [f"l{i}" for i in range(500)] and stream.output == "eof"
        assert longest[0] < 0.5 and not errors

    asyncio.run(go())


def test_asyncio_protocol_break_closes_the_transport() -> None:
    async def go() -> None:
        errors = _loop_errors(asyncio.get_running_loop())
        seen_close = asyncio.Event()
        server = await tcp_server("endless", seen_close)
        port = server.sockets[0].getsockname()[1]
        closes = []

        async def start(push: callstream.Push) -> None:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_connection(lambda: LineProtocol(push), "127.0.0.1", port)
            push.on_cancel(lambda: (closes.append(1), transport.close()))

        got = []
        async with callstream.afrom_push(start, sink="bounded") as s:
            async for line in s:
                got.append(line)
                if len(got) == 20:
                    break
        await asyncio.wait_for(seen_close.wait(), 2)  # the server saw the connection closed
        server.close()
        await server.wait_closed()
        assert got == [f"l{i}" for i in range(20)] and closes == [1] and not errors

    asyncio.run(go())


def test_asyncio_protocol_reset_is_the_stream_error() -> None:
    async def go() -> None:
        errors = _loop_errors(asyncio.get_running_loop())
        server = await tcp_server("reset", asyncio.Event())
        port = server.sockets[0].getsockname()[1]

        async def start(push: callstream.Push) -> None:
            loop = asyncio.get_running_loop()
            await loop.create_connection(lambda: LineProtocol(push), "127.0.0.1", port)

        got = []
        with pytest.raises(ConnectionResetError):
            async with callstream.afrom_push(start, timeout=10) as s:
                async for line in s:
                    got.append(line)
        server.close()
        await server.wait_closed()
        assert got == ["l0", "l1"] and not errors

    asyncio.run(go())


# -- four producer threads at once ------------------------------------------------------------


class FourProducers:
    def __init__(self, n: int, *, forever: bool = False) -> None:
        self.n = n
        self.forever = forever
        self.go = threading.Barrier(4)
        self.threads: list[threading.Thread] = []
        self.hooks = 0
        self.raised: list[BaseException] = []

    def start(self, push: callstream.Push) -> None:
        left = [4]
        lock = threading.Lock()
        push.on_cancel(self.on_cancel)

        def producer(k: int) -> None:
            try:
                self.go.wait(5)
                i = 0
                while i < self.n or (self.forever and not push.closed):
                    push.emit((k, i))
                    i += 1
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    push.finish("all four done")
                    push.emit((k, "late"))  # after the end: a no-op
            except BaseException as exc:
                self.raised.append(exc)
                raise

        self.threads = [threading.Thread(target=producer, args=(k,), name=f"producer-{k}") for k in range(4)]
        for t in self.threads:
            t.start()

    def on_cancel(self) -> None:
        self.hooks += 1


def test_four_producer_threads_order_per_producer_nothing_lost(face: str, sink: str) -> None:
    producers = FourProducers(2000)
    stream = make(face, producers.start, sink=sink)
    got = run(face, stream)
    assert len(got) == 8000 and stream.output == "all four done"
    for k in range(4):
        assert [i for kk, i in got if kk == k] == list(range(2000))
    for t in producers.threads:
        t.join(2)
    assert producers.hooks == 0 and not producers.raised


def test_four_producer_threads_break_hook_once_no_exception(
    face: str, sink: str, thread_errors: list[BaseException]
) -> None:
    producers = FourProducers(0, forever=True)
    stream = make(face, producers.start, sink=sink)
    seen: list[Any] = []
    got = run(face, stream, lambda item: seen.append(item) or len(seen) < 500)
    assert len(got) == 500
    for t in producers.threads:
        t.join(2)
        assert not t.is_alive()
    assert producers.hooks == 1 and not producers.raised and not thread_errors
