"""`Stream`: the synchronous face, and `from_callback`."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Generic, Literal, NoReturn, TypeVar

from ._answer import AnswerFilter, StreamStats, Summary
from ._core import (
    EMPTY,
    IDLE,
    WAIT_SLICE,
    Producer,
    Status,
    Timeouts,
    _Core,
    _State,
    add_note,
    check_state_for_enter,
)
from .events import Event, token_text
from .sinks import Sink, SinkName, SinkStatistics

__all__ = ("Stream", "from_callback")

T = TypeVar("T")
Self = TypeVar("Self", bound="_BaseStream[Any]")


class _BaseStream(Generic[T]):
    """What both faces share: state, text, output, close, repr."""

    _kind = "stream"

    def __init__(self, core: _Core[Any]) -> None:
        self._core = core
        self._pending: deque[Any] = EMPTY
        self._parts: list[str] = []
        self._merged = 0  # parts folded into one by `text`: still counted as tokens
        self._delivered = 0
        # who iterates: None (nobody yet), "items" (the stream itself) or "tokens"
        self._mode: Literal["items", "tokens"] | None = None

    @property
    def text(self) -> str:
        """The token text delivered so far, concatenated (partial after an error)."""
        if len(self._parts) > 1:
            self._merged += len(self._parts) - 1
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def _tokens_delivered(self) -> int:
        return len(self._parts) + self._merged

    @property
    def status(self) -> Status:
        """`"running"`, `"completed"`, `"interrupted"` (a LangGraph graph paused on
        `interrupt()`: the run ended normally, `output` holds `"__interrupt__"`),
        `"error"`, `"timeout"` or `"cancelled"`."""
        return self._core.status

    @property
    def output(self) -> Any:
        """What the producer returned (for a runnable: what `invoke` returns).

        Raises:
            RuntimeError: the stream has not completed (still running, or it
                ended with an error, a timeout or a cancellation). An
                interrupted stream completed: its output is what `invoke`
                returns, `"__interrupt__"` included.
        """
        core = self._core
        if core.status == "completed" or core.status == "interrupted":
            return core.value
        if core.state is _State.NEW:
            raise RuntimeError("no output yet: the stream has not started; iterate it to the end first")
        if core.status == "running":
            raise RuntimeError("no output yet: the stream is still running; iterate it to the end first")
        cause = core.value if isinstance(core.value, BaseException) else None
        raise RuntimeError(f"no output: the stream ended with status {core.status!r}") from cause

    def statistics(self) -> SinkStatistics:
        """The sink's statistics (buffered items, peak, waiting producers...)."""
        return self._core.statistics()

    @property
    def stats(self) -> StreamStats:
        """Live figures, updated as the run goes (tokens, LLM calls, tool calls, usage)."""
        return self._core.stats

    @property
    def summary(self) -> Summary:
        """How the stream went, on every exit path: status, text, tool calls,
        usage, time to first token, tokens/s, longest gap, LLM calls, peak
        sink depth (a snapshot; `status` is `"running"` until the end)."""
        core = self._core
        error = core.value if core.status in ("error", "timeout") else None
        peak = core.statistics().peak
        return core.stats.summary(core.status, self.text, peak, error, core.t_end, self._tokens_delivered())

    def close(self) -> None:
        """Stop the producer at its next callback and end iteration.

        Returns at once, without waiting for the producer. Idempotent; safe
        from any thread, and from inside the producer.
        """
        self._pending.clear()  # undelivered items go now, not when the stream is collected
        self._core.close()

    def _claim(self, mode: Literal["items", "tokens"]) -> None:
        if self._mode is None:
            self._mode = mode
        elif self._mode != mode:
            raise RuntimeError(
                "iterate either the stream (events) or its tokens(), not both: "
                "each item is delivered once, so mixing them would split the stream"
            )

    def _note_consumer_error(self, exc: BaseException | None) -> None:
        pending = self._core.pending_error()
        if exc is not None and pending is not None and pending is not exc:
            add_note(exc, f"callstream: the producer had also raised {pending!r} (not delivered)")

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None and core.state is not _State.DONE:
            try:
                core.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        core = self._core
        state = core.status if core.state is not _State.NEW else "not started"
        return f"<{type(self).__name__} {state}, delivered: {self._delivered}, sink: {core.sink!r}>"


class Stream(_BaseStream[T]):
    """A synchronous iterator over what a producer emits.

    Use it as a context manager (`with ... as stream:`) or iterate it
    directly; the producer starts on `__enter__` or on the first `next()`.
    Items arrive in order, each exactly once. When the producer raises, the
    same exception object is raised here after every item emitted before it.

    Leaving the `with` block, `close()`, closing a partly consumed `tokens()`,
    or garbage collection stop the producer at its next callback without
    waiting for it. A stream is single-use: after the end iteration yields
    nothing, and entering it again raises `RuntimeError`.
    """

    def __enter__(self: Self) -> Self:
        check_state_for_enter(self._core.state, self._kind)
        self._core.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._note_consumer_error(exc)
        self.close()

    def __aenter__(self) -> NoReturn:
        raise TypeError(
            "this is a sync Stream: use `with`, not `async with` (in async code, use aiter_callbacks / afrom_callback)"
        )

    def __aexit__(self, *exc_info: object) -> NoReturn:
        raise TypeError("this is a sync Stream: use `with`, not `async with`")  # pragma: no cover

    def __aiter__(self) -> NoReturn:
        raise TypeError(
            "this is a sync Stream: use `for`, not `async for` (in async code, use aiter_callbacks / afrom_callback)"
        )

    def __iter__(self) -> Iterator[T]:
        # A fresh generator that holds the stream, never stored on it: the
        # stream stays collectable by refcount (no cycle), and
        # `for x in from_callback(p)` keeps the stream alive while it runs.
        if self._mode != "items":
            self._claim("items")
        return self._items()

    def __next__(self) -> T:
        try:
            item = self._pending.popleft()
        except IndexError:
            if self._mode != "items":
                self._claim("items")
            self._pending = batch = self._next_batch()
            item = batch.popleft()
        self._delivered += 1
        if text := token_text(item):
            self._parts.append(text)
        return item  # type: ignore[no-any-return]

    def _items(self, idle: float | None = None) -> Iterator[Any]:
        # A generator rather than __next__ for `for` loops: resuming a frame
        # is about twice as cheap as a method call, and this runs per token.
        # With `idle`, IDLE is yielded whenever that long passes without an
        # item (the web encoders' heartbeat).
        parts = self._parts
        batch = self._pending
        while True:
            pop = batch.popleft
            while batch:  # the same deque as self._pending: close() empties it
                item = pop()
                self._delivered += 1
                if type(item) is str:  # token_text(), inlined: this runs per item
                    if item:
                        parts.append(item)
                elif type(item) is Event and item.kind == "token" and item.text:
                    parts.append(item.text)
                yield item
            batch = self._pending  # next() may have fetched a new batch meanwhile
            if not batch:
                try:
                    batch = self._pending = self._next_batch(idle)
                except StopIteration:
                    return
                if not batch:
                    yield IDLE

    def _next_batch(self, idle: float | None = None) -> deque[Any]:
        """Wait for the next non-empty batch; raise StopIteration at the end.

        With `idle`, return an empty deque once that long passed without one.
        """
        core = self._core
        if core.state is _State.NEW:
            core.start()
        elif core.state is _State.DONE:
            raise StopIteration
        sink = core.sink
        wait: float | None = 0.0
        yielded = False
        idle_at = None if idle is None else time.monotonic() + idle
        while True:
            done = core.worker_done  # read before take(): items put before `done` are in the sink
            batch = sink.take(wait)
            if batch:
                return batch
            if done or core.stopping:
                core.end(self._delivered, self._tokens_delivered())
                raise StopIteration
            if not yielded:
                # Let a busy producer run before we block: it then hands over a
                # batch instead of waking us (a futex and a GIL hand-off) per item.
                # An idle producer (waiting on the network) gives the GIL straight back.
                yielded = True
                time.sleep(0)
                continue
            wait = core.wait_time()
            wait = WAIT_SLICE if wait is None or wait > WAIT_SLICE else wait
            if idle_at is not None:
                left = idle_at - time.monotonic()
                if left <= 0:
                    return deque()
                wait = min(wait, left)

    def tokens(self, *, answer_only: bool = False, holdback: int | None = 80) -> Iterator[str]:
        """Yield the text of token items, skipping empty strings.

        For `iter_callbacks`, the text of token events; for `from_callback`,
        the `str` items. The stream is closed when the generator ends, is
        closed, or is garbage-collected, so no `with` is needed.

        Args:
            answer_only: yield only the text of LLM calls that end without
                calling a tool (an agent's answer, not its "Let me look that
                up"). A call with tools bound is held back until a tool-call
                chunk shows it was a preamble (dropped), `holdback` characters
                arrived without one (released, then streamed), or it ends.
                Calls with no tools bound stream at once.
            holdback: characters to hold back, see `answer_only`. A preamble
                longer than this is released as if it were the answer; with
                `None` a call's text is held until the call ends or a tool
                call starts, so a preamble never leaks (the answer of a call
                with tools bound then arrives in one piece, when it ends).

        Raises:
            RuntimeError: the stream itself was already iterated.
        """
        self._claim("tokens")
        if answer_only:
            return self._answer_tokens(AnswerFilter(holdback))
        return self._tokens()

    def _answer_tokens(self, answers: AnswerFilter) -> Iterator[str]:
        try:
            for item in self._items():
                yield from answers.feed(item)
        finally:
            self.close()

    def _tokens(self) -> Iterator[str]:
        parts = self._parts
        try:
            while True:
                try:
                    batch = self._next_batch()
                except StopIteration:
                    return
                self._pending = batch
                pop = batch.popleft
                while batch:
                    item = pop()
                    self._delivered += 1
                    if type(item) is Event:  # token_text(), inlined: this runs per token
                        text = item.text if item.kind == "token" else None
                    else:
                        text = item if type(item) is str else None
                    if text:
                        parts.append(text)
                        yield text
        finally:
            self.close()


def from_callback(
    producer: Callable[[Callable[[Any], None]], Any],
    *,
    sink: SinkName | Sink = "queue",
    timeout: float | None = None,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
) -> Stream[Any]:
    """Bridge any callback API to an iterator.

    `producer(emit)` runs in a worker thread of its own, with the caller's
    `contextvars`; every object it passes to `emit` is yielded, in order,
    exactly once (`None`, `""` and exceptions included). Its return value
    becomes `stream.output`; its exception is re-raised in the consumer.

    ```python
    def producer(emit):
        client.generate(prompt, on_token=emit)
        return "done"

    with callstream.from_callback(producer, timeout=30) as stream:
        for token in stream:
            print(token, end="")
    ```

    Args:
        producer: called once as `producer(emit)`.
        sink: `"queue"` (default), `"deque"`, `"bounded"`, or a `Sink`.
        timeout: seconds for the whole stream.
        first_token_timeout: seconds until the first item.
        idle_timeout: seconds allowed between two items.

    Every emitted item counts as an event for the time limits. Once the stream
    is closed or timed out, `emit` raises `callstream.sinks.Cancelled`, a
    `BaseException`, so the producer stops there.

    An `async def` producer (or one that returns a coroutine) is run to the
    end in the worker thread, on an event loop of its own; in an async app use
    `afrom_callback`, which runs it on the caller's loop.

    Raises:
        TypeError: `producer` is not callable, or `sink` is neither a name nor
            a `Sink`.
        ValueError: an unknown sink name, or a timeout that is not a positive
            number.
    """
    timeouts = Timeouts.of(timeout, first_token_timeout, idle_timeout)
    return Stream(_Core(_as_producer(producer), sink, timeouts))


def _as_producer(producer: Callable[[Callable[[Any], None]], Any]) -> Producer:
    """Check `producer`; one that returns a coroutine (an `async def`) has it
    run to the end in the worker thread, on an event loop of its own."""
    if not callable(producer):
        raise TypeError(f"producer must be callable as producer(emit), not {type(producer).__name__}")

    def produce(emit: Callable[[Any], None]) -> Any:
        value = producer(emit)
        if inspect.iscoroutine(value):
            return asyncio.run(value)
        return value

    return produce
