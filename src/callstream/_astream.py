"""`AsyncStream`: the asynchronous face, and `afrom_callback`."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from functools import partial
from types import TracebackType
from typing import Any, Final, NoReturn, TypeVar, final

from ._answer import AnswerFilter
from ._core import Timeouts, _Core, _State
from ._face import IDLE, _BaseStream
from ._worker import as_producer
from .events import token_text
from .sinks import DequeSink, QueueSink, Sink, SinkName, make_sink, never_blocks

__all__ = ("AsyncStream", "afrom_callback")

T = TypeVar("T")
Self = TypeVar("Self", bound="AsyncStream[Any]")

#: Longest single wait of an async consumer; only a safety net (the sink's
#: wakeup and the deadlines end waits earlier).
_ASYNC_SLICE: Final = 0.5
#: The sinks whose wake-up is never lost: a consumer waiting on them without a deadline
#: needs no safety timer (`BoundedSink` and users' own sinks keep one).
_NO_LOST_WAKEUPS: Final = (DequeSink, QueueSink)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _wake_threadsafe(loop: asyncio.AbstractEventLoop, thread: int, fut: asyncio.Future[None]) -> None:
    if threading.get_ident() == thread:  # a producer task on the consumer's own loop
        _wake(fut)
        return
    try:
        loop.call_soon_threadsafe(_wake, fut)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


@final
class AsyncStream(_BaseStream[T]):
    """The asynchronous twin of `Stream`: `async with` / `async for`.

    The consumer awaits without blocking the loop. Where the producer runs
    depends on it and on the sink: an async producer (an `async def` given to
    `afrom_callback`, the `astream()` that `aiter_callbacks` drives, an
    awaitable `afrom_push` start) runs as a task on the consumer's event loop
    when the sink never blocks (`"queue"`, `"deque"`, a
    `BoundedSink` with a `drop_*` or `"error"` policy). A plain function, or
    any producer with a sink that can block, runs in a thread of its own
    (never in the event loop's default executor, which a few slow streams
    would exhaust), so that backpressure never blocks the loop. A push
    producer's SDK calls back from wherever it runs.

    Everything `Stream` guarantees holds: order, exactly-once, error
    identity, cancellation on exit, `aclose()` or garbage collection.
    Cancelling the task that awaits `__anext__` leaves the stream usable
    (except for a language model the consumer steps itself, see
    `aiter_callbacks`: that cancellation stops it, as it stops `astream()`);
    leaving `async with` closes it.
    """

    async def __aenter__(self: Self) -> Self:
        self._check_enter()
        self._core.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._note_consumer_error(exc)
        self.close()

    def __enter__(self) -> NoReturn:
        raise TypeError(
            "this is an AsyncStream: use `async with`, not `with` (in sync code, use iter_callbacks / from_callback)"
        )

    def __exit__(self, *exc_info: object) -> NoReturn:
        raise TypeError("this is an AsyncStream: use `async with`, not `with`")  # pragma: no cover

    def __iter__(self) -> NoReturn:
        raise TypeError(
            "this is an AsyncStream: use `async for` (or `[x async for x in stream]`), not `for` or list() "
            "(in sync code, use iter_callbacks / from_callback)"
        )

    async def aclose(self) -> None:
        """Same as `close()`, for `contextlib.aclosing` and async frameworks."""
        self.close()

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        try:
            item = self._pending.popleft()
        except IndexError:
            if self._mode != "items":
                self._claim("items")
            self._pending = batch = await self._next_batch()
            item = batch.popleft()
        self._delivered += 1
        if text := token_text(item):
            self._parts.append(text)
        return item  # type: ignore[no-any-return]

    async def _items(self, idle: float | None = None) -> AsyncIterator[Any]:
        """Items, and IDLE whenever `idle` seconds pass without one (heartbeats)."""
        parts = self._parts
        while True:
            batch = self._pending
            if not batch:
                try:
                    batch = self._pending = await self._next_batch(idle)
                except StopAsyncIteration:
                    return
                if not batch:
                    yield IDLE
                    continue
            item = batch.popleft()
            self._delivered += 1
            if text := token_text(item):
                parts.append(text)
            yield item

    async def _next_batch(self, idle: float | None = None) -> deque[Any]:
        """Wait for the next non-empty batch; raise StopAsyncIteration at the end.

        With `idle`, return an empty deque once that long passed without one.
        """
        core = self._core
        if core.state is _State.NEW:
            core.start()
        elif core.state is _State.DONE:
            raise StopAsyncIteration
        sink = core.sink
        pull = core.pull
        if pull is not None and idle is None and core.timeouts is None:
            # A model stepped by this task, no time limit: the short way (each step
            # fires about one event). Its end, or a close, takes the long way below.
            while not (core.worker_done or core.stopping):
                batch = sink.take(0)
                if batch:
                    return batch
                step = pull.begin(core, None)  # `pull.astep`, inlined: no coroutine per step
                if step is not None:
                    try:
                        await step
                    except BaseException as exc:
                        pull.failed(core, exc)
                    else:
                        pull.stepped(core)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] | None = None
        idle_at = None if idle is None else loop.time() + idle
        try:
            while True:
                done = core.worker_done
                batch = sink.take(0)
                if batch:
                    return batch
                if done or core.stopping:
                    core.raise_outcome(self._delivered, self._tokens_delivered())
                    raise StopAsyncIteration
                wait = core.enforce_deadlines()
                if wait == 0:
                    continue
                if (pull := core.pull) is not None:
                    if idle_at is None:  # the producer's next chunk, in this task
                        await pull.astep(core, wait)
                        continue
                    pull.detach(core)  # an idle wait must not advance it: a task of its own from here
                if idle_at is not None:
                    left = idle_at - loop.time()
                    if left <= 0:
                        return deque()
                    wait = left if wait is None else min(wait, left)
                if fut is None:  # arm the wakeup, then look once more before sleeping
                    fut = loop.create_future()
                    sink.set_wakeup(partial(_wake_threadsafe, loop, threading.get_ident(), fut))
                    continue
                if wait is None and type(sink) in _NO_LOST_WAKEUPS:
                    # No deadline, and a sink whose wake-up cannot be lost (its put and
                    # set_wakeup meet under one lock, or in the GIL's order): no safety
                    # timer. One per wait costs a TimerHandle per token, and thousands of
                    # cancelled ones in the loop's heap at 1,000 streams.
                    await fut
                else:
                    timer = loop.call_later(min(wait or _ASYNC_SLICE, _ASYNC_SLICE), _wake, fut)
                    try:
                        await fut
                    finally:
                        timer.cancel()
                fut = None
        finally:
            if fut is not None and (not fut.done() or fut.cancelled()):  # not woken: disarm
                sink.set_wakeup(None)

    def tokens(self, *, answer_only: bool = False, holdback: int | None = 80) -> AsyncGenerator[str, None]:
        """Yield the text of token items, skipping empty strings.

        The stream is closed when the generator ends or is closed (or
        finalised by the event loop), so no `async with` is needed.
        `answer_only` and `holdback` are as for `Stream.tokens`.

        Raises:
            RuntimeError: the stream itself was already iterated.
        """
        answers = AnswerFilter(holdback) if answer_only else None
        self._claim_tokens(answers)
        return self._tokens(answers)

    async def _tokens(self, answers: AnswerFilter | None) -> AsyncGenerator[str, None]:
        # Only the waiting is this face's: the batch is `_BaseStream._texts`'s.
        try:
            core = self._core
            if self._can_pull_texts(answers):
                # `_texts` inlined over the sink's own buffer, stepping the model when
                # it is empty: the twin of `Stream._tokens`'s, but for the await
                buf, parts, pull = self._pulled_buffer(), self._parts, core.pull
                assert pull is not None
                while True:
                    while buf:
                        item = buf.popleft()
                        self._delivered += 1
                        # a runnable's: a token's text alone (`_Core.texts_only`), or an Event
                        text = item if type(item) is str else item.text if item.kind == "token" else None
                        if text:
                            parts.append(text)
                            yield text
                    item = None  # the last event is not held while the model runs
                    # `PullWorker.astep`, inlined: no coroutine per token. Nothing to step
                    # (the run ended, is stopping, or was handed to a worker): the general way.
                    step = pull.begin(core, None)
                    if step is None:
                        break
                    try:
                        await step
                    except BaseException as exc:
                        pull.failed(core, exc)
                    else:
                        pull.stepped(core)
            while True:
                try:
                    batch = await self._next_batch()
                except StopAsyncIteration:
                    return
                self._pending = batch
                for text in self._texts(batch, answers):
                    yield text
        finally:
            self.close()


def afrom_callback(
    producer: Callable[[Callable[[Any], None]], Any],
    *,
    sink: SinkName | Sink = "queue",
    timeout: float | None = None,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
) -> AsyncStream[Any]:
    """The async twin of `from_callback`: same arguments, same guarantees.

    Consume with `async with afrom_callback(producer) as stream: async for ...`.
    A plain function `producer(emit)` runs in a worker thread of its own. An
    `async def producer(emit)` runs as a task on the caller's event loop when
    the sink never blocks (`"queue"`, `"deque"`, a `BoundedSink` with a
    `drop_*` or `"error"` policy), and cancelling the stream cancels that
    task; with a sink that can block, it runs in a worker thread on an event
    loop of its own, so that backpressure never blocks the caller's loop.
    In both cases `emit` is a plain function (call it, do not await it).
    """
    timeouts = Timeouts.of(timeout, first_token_timeout, idle_timeout)
    produce = as_producer(producer)
    sink_ = make_sink(sink)
    aproducer = producer if inspect.iscoroutinefunction(producer) and never_blocks(sink_) else None
    return AsyncStream(_Core(produce, sink_, timeouts, aproducer=aproducer))
