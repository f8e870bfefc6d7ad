"""`Stream`: the synchronous face, and `from_callback`."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from types import TracebackType
from typing import Any, Final, NoReturn, TypeVar, final

from ._answer import AnswerFilter
from ._core import Timeouts, _Core, _State
from ._face import IDLE, _BaseStream
from ._worker import as_producer
from .events import Event, token_text
from .sinks import Sink, SinkName

__all__ = ("Stream", "from_callback")

T = TypeVar("T")
Self = TypeVar("Self", bound="Stream[Any]")

#: Longest single wait of a consumer: keeps Ctrl-C responsive and bounds the
#: damage of a custom sink that forgets to wake the consumer.
WAIT_SLICE: Final = 0.1


@final
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
        self._check_enter()
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
        pull = core.pull
        if pull is not None and idle is None:
            # A model stepped by this thread (never with a time limit): the short way
            # (each step fires about one event). Its end, or a close, takes the long way.
            while not (core.worker_done or core.stopping):
                batch = sink.take(0)
                if batch:
                    return batch
                pull.step(core)
        wait: float | None = 0.0
        yielded = False
        idle_at = None if idle is None else time.monotonic() + idle
        while True:
            done = core.worker_done  # read before take(): items put before `done` are in the sink
            batch = sink.take(wait)
            if batch:
                return batch
            if done or core.stopping:
                core.raise_outcome(self._delivered, self._tokens_delivered())
                raise StopIteration
            if (pull := core.pull) is not None:
                if idle_at is None:  # the producer's next chunk, in this thread
                    pull.step(core)
                    continue
                pull.detach(core)  # an idle wait must not advance it: a thread of its own from here
            if not yielded:
                # Let a busy producer run before we block: it then hands over a
                # batch instead of waking us (a futex and a GIL hand-off) per item.
                # An idle producer (waiting on the network) gives the GIL straight back.
                yielded = True
                time.sleep(0)
                continue
            wait = core.enforce_deadlines()
            wait = WAIT_SLICE if wait is None or wait > WAIT_SLICE else wait
            if idle_at is not None:
                left = idle_at - time.monotonic()
                if left <= 0:
                    return deque()
                wait = min(wait, left)

    def tokens(self, *, answer_only: bool = False, holdback: int | None = 80) -> Generator[str, None, None]:
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
        answers = AnswerFilter(holdback) if answer_only else None
        self._claim_tokens(answers)
        return self._tokens(answers)

    def _tokens(self, answers: AnswerFilter | None) -> Generator[str, None, None]:
        # Only the waiting is this face's: the batch is `_BaseStream._texts`'s.
        try:
            core = self._core
            if self._can_pull_texts(answers):
                # `_texts` inlined over the sink's own buffer, stepping the model when
                # it is empty: the twin of `AsyncStream._tokens`'s, but for the await
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
                    if core.worker_done or core.stopping or core.pull is None:
                        break
                    pull.step(core)
            while True:
                try:
                    batch = self._next_batch()
                except StopIteration:
                    return
                self._pending = batch
                yield from self._texts(batch, answers)
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
    is closed or timed out, `emit` raises `callstream.errors.Cancelled`, a
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
    return Stream(_Core(as_producer(producer), sink, timeouts))
