"""`from_push` / `afrom_push`: SDKs that call back from threads or loops of their own.

`from_callback` bridges a call that blocks while it emits. A push-style SDK
starts, returns, and later calls back from its own threads or event loop (a
websocket client's `on_message`, an MQTT network loop, a speech SDK's events),
reports its end through separate done/error callbacks, and must be told to stop.

The bridge is one more producer under the shared core (`_core._Core`): the
same sinks, time limits, outcome rules and faces. What differs lives here:

- no worker thread: `start(push)` runs when the stream starts, in the
  consumer's thread (or as a task on its loop when it is a coroutine);
- the producer side (`Push`) is safe from any number of threads and loops and
  never raises into them: after the end or a cancel its calls are no-ops;
- the producer is stopped by the user's `on_cancel` hooks, not by an exception;
- on an event loop's own thread `emit` never blocks: when the sink could block,
  items go through a backlog that a helper thread feeds into the sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import itertools
import logging
import threading
from asyncio import events
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast, final

from ._astream import AsyncStream
from ._core import Status, Timeouts, _Core
from ._stream import Stream
from ._worker import Producer, cancel_task, track
from .errors import Cancelled
from .sinks import BoundedSink, DequeSink, QueueSink, Sink, SinkName, never_blocks

__all__ = ("Push", "afrom_push", "from_push")

logger = logging.getLogger("callstream")

Start = Callable[["Push"], Any]

_THREAD_SAFE_SINKS = (QueueSink, DequeSink, BoundedSink)

#: An awaiting `aemit`: its loop and the future resolved once the item is in the sink.
_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


def _value(counter: itertools.count[int]) -> int:
    """The next value an `itertools.count` will give (how many it gave), without taking one."""
    return int(repr(counter)[6:-1])


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _release(waiter: _Waiter | None) -> None:
    if waiter is not None:
        loop, fut = waiter
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve, fut)


@final
class Push:
    """The producer side of a push stream: what `start(push)` receives.

    Every method is safe from any thread and any event loop, by any number of
    producers at once, and never raises into them: once the stream has ended
    (`finish`, `fail`) or the consumer has left (a `break`, `close()`, a time
    limit, garbage collection), `emit`, `finish` and `fail` are silent no-ops.

    - `emit(item)`: deliver one item; each producer's items arrive in order,
      `None`, `""` and exceptions included. With a bounded `"block"` sink it
      waits for room, except on an event loop's own thread, where it never
      blocks: the item is accepted past the bound (nothing is lost), and
      `await push.aemit(item)` is the way for async producers to wait for room.
    - `finish(output=None)` / `fail(exc)`: the first one ends the stream, after
      every item emitted before it; `output` becomes `stream.output`, `exc` is
      raised in the consumer as the same object.
    - `on_cancel(fn)`: `fn()` is called once if the consumer leaves early, a
      time limit fires, or `start` raises — so you stop the SDK (`ws.close`,
      `client.disconnect`) instead of it being sent an exception. Hooks run
      outside any lock, in the thread that noticed the end (the consumer's, a
      finaliser's, or a producer's whose `emit` saw a time limit pass); one
      registered after that is called at once. An exception in a hook is
      logged on the `callstream` logger, and the other hooks still run.
    """

    __slots__ = (
        "__weakref__",
        "_backlog",
        "_cancelled",
        "_cond",
        "_core",
        "_ended",
        "_enters",
        "_hooks",
        "_leaves",
        "_lock",
        "_may_block",
        "_pump",
        "_put",
        "_serial",
        "_sink_done",
    )

    def __init__(self, core: _PushCore) -> None:
        self._core = core
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._ended = False  # finish/fail/cancel/timeout seen: emits are no-ops
        self._cancelled = False  # stopped from outside (or start failed): hooks fired
        # Puts under way = enters - leaves (the backlog pump counts as one). The
        # counters are atomic without a lock: an emit announces itself, then
        # checks `_ended`; the end sets `_ended`, then compares the counters. So
        # either the emit sees the end and backs out, or the end sees the emit
        # and the emit's own leave finishes the sink. No put follows the end marker.
        self._enters = itertools.count()
        self._leaves = itertools.count()
        self._sink_done = False  # the sink was told the end (or closed)
        self._hooks: list[Callable[[], Any]] = []
        self._put = core.make_emit()
        self._may_block = not never_blocks(core.sink)
        # The built-in sinks take puts from several threads at once; a custom
        # sink's protocol promises it one producer thread, so its puts are serialised.
        self._serial = None if isinstance(core.sink, _THREAD_SAFE_SINKS) else threading.Lock()
        self._backlog: deque[tuple[Any, _Waiter | None]] = deque()
        self._pump: threading.Thread | None = None

    # -- the producer's API ------------------------------------------------------

    def emit(self, item: Any) -> None:
        """Deliver `item` to the consumer; a no-op once the stream has ended."""
        if self._ended:
            return
        next(self._enters)
        try:
            if self._ended:  # the end came meanwhile: back out
                return
            if self._may_block and events._get_running_loop() is not None:
                # On a loop's own thread: never block it (its consumer may run on it).
                self._to_backlog(item, None)
                return
            if self._serial is None:
                self._put(item)
            else:
                with self._serial:
                    self._put(item)
        except Cancelled:  # a time limit passed at this emit (a consumer's close already ended us)
            self._end(None, stop=True)
        except Exception as exc:  # a failing sink, or StreamOverflow: the stream's error
            self._end(("error", exc), stop=True)
        finally:
            next(self._leaves)
            if self._ended:
                self._try_finish_sink()

    async def aemit(self, item: Any) -> None:
        """Deliver `item`, waiting without blocking the loop until the sink has room.

        The same as `emit` when the sink never blocks; with a bounded
        `"block"` sink it returns once the item is inside the bound (or the
        stream has ended). Cancelling the awaiting task does not take the item
        back.
        """
        if not self._may_block:
            self.emit(item)
            return
        loop = events.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if not self._to_backlog(item, (loop, fut)):
            return
        await fut

    def finish(self, output: Any = None) -> None:
        """End the stream: `output` becomes `stream.output` (first of finish/fail wins)."""
        self._end(("completed", output), stop=False)

    def fail(self, exc: BaseException | type[BaseException]) -> None:
        """End the stream with `exc`, raised in the consumer after the items before it.

        An exception class is instantiated without arguments, as `raise` does;
        anything else ends the stream with a `TypeError` that says so.
        """
        error: BaseException
        if isinstance(exc, BaseException):
            error = exc
        elif isinstance(exc, type) and issubclass(exc, BaseException):
            try:
                error = exc()
            except Exception as made:
                error = made
        else:
            error = TypeError(f"push.fail() takes an exception, not {type(exc).__name__}: {exc!r}")
        self._end(("error", error), stop=False)

    def on_cancel(self, fn: Callable[[], Any]) -> None:
        """Call `fn()` once when the consumer leaves early, a time limit fires, or `start` raises.

        Not called when the stream ended by `finish` or `fail` first. Called at
        once if that already happened.

        Raises:
            TypeError: `fn` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"on_cancel takes a callable, not {type(fn).__name__}")
        with self._cond:
            if not self._cancelled:
                if not self._ended:
                    self._hooks.append(fn)
                return
        self._run_hooks([fn])

    @property
    def closed(self) -> bool:
        """Whether the stream has ended or was cancelled (producers may stop early)."""
        return self._ended

    @property
    def emitted(self) -> int:
        """How many `emit`/`aemit` calls were made while the stream was open."""
        return _value(self._enters)

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "ended" if self._ended else "open"
        return f"<callstream.Push {state}, emitted: {self.emitted}, hooks: {len(self._hooks)}>"

    # -- the end -------------------------------------------------------------------

    def _end(self, outcome: tuple[Status, Any] | None, *, stop: bool, close_sink: bool = False) -> None:
        """End the stream once: record `outcome`, finish the sink after the puts
        under way, and with `stop` run the hooks (outside the lock)."""
        core = self._core
        with self._cond:
            if self._ended:
                return
            if outcome is not None:
                # Under our lock, before `_ended`: the last put's `_leave` may
                # finish the sink at once, and the consumer must see the outcome then.
                core._settle(*outcome)
            self._ended = True
            hooks: list[Callable[[], Any]] = []
            if stop:
                self._cancelled = True
                hooks, self._hooks = self._hooks, []
            self._cond.notify_all()  # a pump waiting for items
        if close_sink:
            # Release producers blocked on a full sink before the hooks run:
            # a hook that waits for the SDK's thread must not wait on us.
            core.close_sink()
        self._try_finish_sink()
        self._run_hooks(hooks)

    def _try_finish_sink(self) -> None:
        """After the end: tell the sink, once no put is under way (exactly once)."""
        with self._lock:
            if self._sink_done or _value(self._enters) != _value(self._leaves):
                return
            self._sink_done = True
        core = self._core
        core.worker_done = True  # before the sink's wake-up (see `_Core.worker_ended`)
        if not core._sink_closed:
            core.sink.finish()

    @staticmethod
    def _run_hooks(hooks: list[Callable[[], Any]]) -> None:
        for fn in hooks:
            try:
                fn()
            except Exception:
                logger.exception("callstream: an on_cancel hook raised; the other hooks still run")

    # -- the backlog: emits on an event loop's thread when the sink could block ----

    def _to_backlog(self, item: Any, waiter: _Waiter | None) -> bool:
        """Queue `item` for the pump (started on first use); False if the stream has ended."""
        with self._lock:
            if self._ended:
                return False
            self._backlog.append((item, waiter))
            if self._pump is not None:
                self._cond.notify()
                return True
            next(self._enters)  # the pump is a put under way until it ends
            pump = self._pump = threading.Thread(
                target=self._run_pump, name=f"callstream-{self._core.id}-push", daemon=True
            )
        try:
            pump.start()
        except BaseException as exc:  # "can't start new thread": the stream's error, never the producer's
            with self._lock:
                dropped = list(self._backlog)
                self._backlog.clear()
            for _, dropped_waiter in dropped:
                _release(dropped_waiter)
            self._end(("error", exc), stop=True)
            next(self._leaves)
            self._try_finish_sink()
            return False
        return True

    def _run_pump(self) -> None:
        core = self._core
        try:
            while True:
                with self._cond:
                    while not self._backlog and not self._ended:
                        self._cond.wait()
                    if not self._backlog or core.stopping:  # drained after the end, or the consumer left
                        dropped = list(self._backlog)
                        self._backlog.clear()
                        break
                    item, waiter = self._backlog.popleft()
                    # Once ended, what is left was emitted before the end: no
                    # time limit applies to it any more.
                    put = core.sink.put if self._ended else self._put
                try:
                    if self._serial is None:
                        put(item)
                    else:
                        with self._serial:
                            put(item)
                except Cancelled:
                    self._end(None, stop=True)
                except Exception as exc:
                    self._end(("error", exc), stop=True)
                finally:
                    _release(waiter)
            for _, waiter in dropped:
                _release(waiter)
        finally:
            next(self._leaves)
            self._try_finish_sink()


class _PushCore(_Core[Any]):
    """The core with a push producer: `start(push)` instead of a worker thread,
    and the `on_cancel` hooks where a thread producer gets `Cancelled`."""

    def __init__(self, start: Start, sink: SinkName | Sink, timeouts: Timeouts | None, *, loop_face: bool) -> None:
        super().__init__(cast(Producer, start), sink, timeouts)  # kept only to be checked as a callable
        self.push = Push(self)
        self.worker = _PushWorker(start, self.push, loop_face)


class _PushWorker:
    """Runs `start(push)` in the consumer's thread (an awaitable it returns: as a
    task on the consumer's loop); cancelling runs the `on_cancel` hooks."""

    __slots__ = ("_context", "_loop", "_loop_face", "_push", "_start", "_task")

    def __init__(self, start: Start, push: Push, loop_face: bool) -> None:
        self._start: Start | None = start
        self._push = push
        self._loop_face = loop_face
        self._context = contextvars.copy_context()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, core: _Core[Any]) -> None:
        """Call `start(push)` (once), with the caller's `contextvars`."""
        track(core)
        start, self._start = self._start, None
        assert start is not None
        push = self._push
        try:
            result = self._context.run(start, push)
        except BaseException as exc:
            push._end(("error", exc), stop=True)
            return
        if not inspect.isawaitable(result):
            return
        if not self._loop_face:
            if inspect.iscoroutine(result):
                result.close()  # never awaited: close it quietly
            push._end(("error", TypeError("start returned an awaitable: use callstream.afrom_push")), stop=True)
            return
        loop = self._loop = events.get_running_loop()
        self._task = self._context.run(loop.create_task, self._await_start(result), name=f"callstream-{core.id}")

    async def _await_start(self, started: Awaitable[Any]) -> None:
        push = self._push
        try:
            await started
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and push._ended:
                return  # ours: the consumer left while start was awaited
            push._end(("error", exc), stop=True)

    def cancel(self) -> None:
        # Called by close() and when the consumer notices a time limit: the
        # producer is stopped by its hooks (and an awaited start is cancelled).
        cancel_task(self._task, self._loop)
        self._push._end(None, stop=True, close_sink=True)


def from_push(
    start: Start,
    *,
    sink: SinkName | Sink = "queue",
    timeout: float | None = None,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
) -> Stream[Any]:
    """Bridge a push-style API (callbacks from its own threads) to an iterator.

    `start(push)` is called once when the stream starts (on `__enter__` or the
    first `next()`), in your thread with your `contextvars`; it starts the SDK
    and returns. The SDK then calls `push.emit(item)` from any thread, and
    `push.finish(output)` or `push.fail(exc)` at its end; `push.on_cancel(fn)`
    registers how to stop it. See `callstream.Push`.

    ```python
    def start(push):
        ws = websocket.WebSocketApp(url,
            on_message=lambda ws, msg: push.emit(msg),
            on_error=lambda ws, exc: push.fail(exc),
            on_close=lambda ws, *_: push.finish())
        push.on_cancel(ws.close)
        threading.Thread(target=ws.run_forever, daemon=True).start()

    with callstream.from_push(start, idle_timeout=30) as stream:
        for message in stream:
            ...
    ```

    Items arrive in the order each producer emitted them, each exactly once.
    `start` raising is the stream's error (raised at the first `next()`, after
    anything it emitted; hooks it registered run). Leaving early, `close()`, a
    time limit or garbage collection run the `on_cancel` hooks and turn every
    later `push` call into a no-op; the consumer never waits for the SDK.
    Every emitted item counts as an event for the time limits; a producer
    that never calls `finish` ends with the `timeout`/`idle_timeout`.

    Args:
        start: called once as `start(push)`; must return without waiting for
            the stream (an `async def start` needs `afrom_push`).
        sink: `"queue"` (default), `"deque"`, `"bounded"`, or a `Sink`.
        timeout: seconds for the whole stream.
        first_token_timeout: seconds until the first item.
        idle_timeout: seconds allowed between two items.

    Raises:
        TypeError: `start` is not callable, is an `async def`, or `sink` is
            neither a name nor a `Sink`.
        ValueError: an unknown sink name, or a timeout that is not a positive
            number.
    """
    if inspect.iscoroutinefunction(start):
        raise TypeError("start is an async function: use callstream.afrom_push, whose start may be awaited")
    timeouts = Timeouts.of(timeout, first_token_timeout, idle_timeout)
    return Stream(_PushCore(start, sink, timeouts, loop_face=False))


def afrom_push(
    start: Callable[[Push], Any],
    *,
    sink: SinkName | Sink = "queue",
    timeout: float | None = None,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
) -> AsyncStream[Any]:
    """The async twin of `from_push`: same arguments, same guarantees.

    `start(push)` may also be an `async def` (say, one that awaits
    `loop.create_connection`): it is awaited as a task on your event loop, and
    cancelled if you leave before it returns. Asyncio callbacks (a
    `Protocol`'s `data_received`) call `push.emit` on the loop's own thread,
    where it never blocks; `await push.aemit(item)` waits for room in a bounded
    sink without blocking the loop.

    ```python
    async def start(push):
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(lambda: LineProtocol(push), host, port)
        push.on_cancel(transport.close)

    async with callstream.afrom_push(start, idle_timeout=30) as stream:
        async for line in stream:
            ...
    ```
    """
    timeouts = Timeouts.of(timeout, first_token_timeout, idle_timeout)
    return AsyncStream(_PushCore(start, sink, timeouts, loop_face=True))
