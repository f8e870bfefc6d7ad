"""The one core under both faces: lifecycle, worker, deadlines, outcome.

No waiting happens here. The sync face (`_stream.py`) and the async face
(`_astream.py`) only decide *how* to wait for the sink; everything else —
starting and cancelling the producer, the time limits, which outcome wins,
what the consumer is told at the end — lives once, in `_Core`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import enum
import itertools
import math
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any, Final, Generic, Literal, TypeVar

from ._answer import StreamStats
from .errors import StreamTimeout, TimeoutName
from .sinks import Cancelled, Sink, SinkName, SinkStatistics, make_sink

T = TypeVar("T")
R = TypeVar("R")

Emit = Callable[[Any], None]
Producer = Callable[[Emit], Any]
AsyncProducer = Callable[[Emit], Awaitable[Any]]
Status = Literal["running", "completed", "interrupted", "error", "timeout", "cancelled"]

_ids = itertools.count(1)

#: Longest single wait of a consumer: keeps Ctrl-C responsive and bounds the
#: damage of a custom sink that forgets to wake the consumer.
WAIT_SLICE: Final = 0.1


class _State(enum.Enum):
    #: built; the producer has not started (nothing runs until enter/iterate)
    NEW = "new"
    #: the producer was started and the consumer has not seen the end
    RUNNING = "running"
    #: the consumer saw the end, or closed the stream; iteration yields nothing
    DONE = "done"


@dataclass(frozen=True)
class Timeouts:
    """The three limits, checked when the stream is created."""

    total: float | None = None
    first: float | None = None
    idle: float | None = None

    @classmethod
    def of(
        cls, timeout: float | None, first_token_timeout: float | None, idle_timeout: float | None
    ) -> Timeouts | None:
        values = {"timeout": timeout, "first_token_timeout": first_token_timeout, "idle_timeout": idle_timeout}
        for name, value in values.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isnan(value):
                raise ValueError(f"{name} must be a positive number of seconds, or None for no limit; got {value!r}")
        if timeout is None and first_token_timeout is None and idle_timeout is None:
            return None
        return cls(timeout, first_token_timeout, idle_timeout)


def add_note(exc: BaseException, note: str) -> None:
    """`BaseException.add_note` (PEP 678), also on Python 3.10."""
    notes = getattr(exc, "__notes__", None)
    if notes is None:
        try:
            exc.__notes__ = notes = []
        except (AttributeError, TypeError):  # an exception type with __slots__
            return
    if isinstance(notes, list):
        notes.append(note)


class _Core(Generic[R]):
    """State shared by a face and its worker thread.

    The worker holds a reference to the core, never to the face, so an
    abandoned face can be garbage-collected (and cancel) while the worker runs.
    """

    def __init__(
        self,
        producer: Producer,
        sink: SinkName | Sink,
        timeouts: Timeouts | None,
        *,
        aproducer: AsyncProducer | None = None,
    ) -> None:
        if not callable(producer):
            raise TypeError(f"producer must be callable as producer(emit), not {type(producer).__name__}")
        self.sink: Sink = make_sink(sink)
        self.state = _State.NEW
        self.status: Status = "running"
        self.value: Any = None  # the return value, or the exception
        self.worker_done = False
        #: the consumer must not wait for the worker any more (closed, or a
        #: deadline hit while the buffer was empty)
        self.stopping = False
        self.error_delivered = False
        #: set by a producer that returned because a LangGraph graph paused on
        #: an interrupt: it ends "interrupted" rather than "completed"
        self.interrupted = False
        self.id = next(_ids)
        self._producer: Producer | None = producer
        # With `aproducer`, an async face whose sink never blocks runs the
        # producer as a task on the consumer's event loop instead of a thread.
        self._aproducer: AsyncProducer | None = aproducer
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context = contextvars.copy_context()
        self._timeouts = timeouts
        self._lock = threading.Lock()
        self._sink_closed = False
        self.t_start = 0.0
        self.t_end: float | None = None
        self.stats = StreamStats()
        self.first_token_t: float | None = None
        self.last_event_t = 0.0

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Start the producer in its own daemon thread, or as a task (once)."""
        if self.state is not _State.NEW:
            return
        self.state = _State.RUNNING
        self.t_start = self.last_event_t = self.stats.started = monotonic()
        if self._aproducer is not None:
            self._start_task()
            return
        thread = threading.Thread(target=self._work, name=f"callstream-{self.id}", daemon=True)
        try:
            thread.start()
        except BaseException:
            self.state = _State.DONE
            self._producer = None
            self.status = "cancelled"
            raise
        _live.add(self)

    def close(self) -> None:
        """Stop the producer at its next emit; never waits for it. Idempotent."""
        self.state = _State.DONE
        self.stopping = True
        self._settle("cancelled", None)
        self._cancel_task()
        if not self._sink_closed:
            self.sink.close()  # may raise (a KeyboardInterrupt): a later close() retries
            self._sink_closed = True

    # -- the task-based producer ----------------------------------------------

    def _start_task(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        # Created inside the caller's context copy: the task sees its contextvars.
        self._task = self._context.run(loop.create_task, self._awork(), name=f"callstream-{self.id}")

    def _cancel_task(self) -> None:
        task, loop = self._task, self._loop
        if task is None or loop is None or task.done():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task.cancel()
        else:  # a finaliser or another thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: the task is gone
                loop.call_soon_threadsafe(task.cancel)

    async def _awork(self) -> None:
        aproducer = self._aproducer
        assert aproducer is not None
        try:
            value = await aproducer(self.make_emit())
        except BaseException as exc:
            self._record(exc, None)
        else:
            self._record(None, value)
        finally:
            self._aproducer = None
            self._worker_ended()

    def _record(self, exc: BaseException | None, value: Any) -> None:
        """Settle the producer's outcome: its return value, or its exception."""
        if exc is None:
            self._settle("interrupted" if self.interrupted else "completed", value)
        elif isinstance(exc, (Cancelled, asyncio.CancelledError)) and (self.stopping or self.status != "running"):
            # Ours: the consumer stopped us, or a deadline passed. Any other
            # Cancelled (say, another stream's) is an error like any other.
            self._settle("cancelled", exc)
        else:
            self._settle("error", exc)

    def _worker_ended(self) -> None:
        try:
            self.sink.finish()
        finally:
            self.worker_done = True

    def _settle(self, status: Status, value: Any) -> bool:
        """Record the terminal outcome; the first one recorded wins."""
        with self._lock:
            if self.status == "running":
                self.status = status
                self.value = value
                self.t_end = monotonic()
                return True
        if status == "error" and self.status == "timeout":
            add_note(self.value, f"callstream: the producer then raised {value!r}")
        return False

    # -- the producer side ----------------------------------------------------

    def make_emit(self, token: bool = True) -> Emit:
        """Return the function the producer calls for each item.

        Without time limits it is the sink's own `put`. With them, the
        deadlines are checked before each item, so an expired stream stops at
        the producer's next callback even when nobody is pulling.
        """
        put = self.sink.put
        t = self._timeouts
        if t is None:
            return put
        total, first, idle = t.total, t.first, t.idle
        core = self

        def emit(item: Any) -> None:
            now = monotonic()
            if (
                (total is not None and now - core.t_start >= total)
                or (first is not None and core.first_token_t is None and now - core.t_start >= first)
                or (idle is not None and now - core.last_event_t >= idle)
            ):
                core._expire_in_producer(now)
            if token and core.first_token_t is None:
                core.first_token_t = now
            core.last_event_t = now
            put(item)
            core.last_event_t = monotonic()  # time blocked on a full sink is not idle time

        return emit

    def _expire_in_producer(self, now: float) -> None:
        limit = self._expired(now)
        if limit is not None:
            self._settle("timeout", self._timeout_error(limit))
            raise Cancelled

    def _work(self) -> None:
        producer = self._producer
        assert producer is not None
        try:
            value = self._context.run(producer, self.make_emit())
        except BaseException as exc:
            self._record(exc, None)
        else:
            self._record(None, value)
        finally:
            self._producer = None
            self._worker_ended()

    # -- the consumer side ----------------------------------------------------

    def _expired(self, now: float) -> TimeoutName | None:
        t = self._timeouts
        assert t is not None
        if t.total is not None and now - self.t_start >= t.total:
            return "timeout"
        if t.first is not None and self.first_token_t is None and now - self.t_start >= t.first:
            return "first_token_timeout"
        if t.idle is not None and now - self.last_event_t >= t.idle:
            return "idle_timeout"
        return None

    def _timeout_error(self, limit: TimeoutName) -> StreamTimeout:
        t = self._timeouts
        assert t is not None
        seconds = {"timeout": t.total, "first_token_timeout": t.first, "idle_timeout": t.idle}[limit]
        assert seconds is not None
        return StreamTimeout(limit, seconds)

    def wait_time(self) -> float | None:
        """How long the consumer may wait for the next item (None: no limit).

        Called only when the buffer is empty. When a deadline has passed it
        records the timeout, stops the producer and returns 0.
        """
        t = self._timeouts
        if t is None:
            return None
        now = monotonic()
        limit = self._expired(now)
        if limit is not None:
            # Whoever settled it (here, or the producer at its last emit), the
            # consumer stops waiting now: a producer task on this very loop
            # may not get to run again before the consumer returns.
            self._settle("timeout", self._timeout_error(limit))
            self.stopping = True
            self._close_sink_quietly()
            return 0.0
        deadlines = []
        if t.total is not None:
            deadlines.append(self.t_start + t.total)
        if t.first is not None and self.first_token_t is None:
            deadlines.append(self.t_start + t.first)
        if t.idle is not None:
            deadlines.append(self.last_event_t + t.idle)
        if not deadlines:  # only a first-token limit, and the first token came
            return None
        return max(min(deadlines) - now, 0.0)

    def _close_sink_quietly(self) -> None:
        self._cancel_task()
        if not self._sink_closed:
            self.sink.close()
            self._sink_closed = True

    def end(self, delivered: int, tokens: int) -> None:
        """The buffer is drained and the producer is done: tell the consumer.

        Returns normally for a completed or cancelled stream (end of
        iteration); raises the producer's exception or the `StreamTimeout`.
        The exception is raised once; later calls return normally.
        """
        self.state = _State.DONE
        if self.status in ("error", "timeout") and not self.error_delivered:
            self.error_delivered = True
            exc: BaseException = self.value
            if self.status == "error":
                add_note(
                    exc,
                    f"callstream: raised by the producer after {tokens} token(s) were delivered "
                    f"({delivered} item(s) in all)",
                )
            self._close_sink_quietly()
            raise exc

    def pending_error(self) -> BaseException | None:
        """A producer error the consumer has not been given (for notes)."""
        if self.status == "error" and not self.error_delivered:
            exc: BaseException = self.value
            return exc
        return None

    def statistics(self) -> SinkStatistics:
        return self.sink.statistics()


_live: weakref.WeakSet[_Core[Any]] = weakref.WeakSet()


@atexit.register
def _close_all_at_exit() -> None:
    """Stop producers of streams still open at exit (say, held in a cycle), so
    an unconsumed producer does not keep filling memory during shutdown."""
    for core in list(_live):
        try:
            core.close()
        except Exception:
            continue


def check_state_for_enter(state: _State, kind: str) -> None:
    if state is _State.RUNNING:
        raise RuntimeError(f"Cannot enter a {kind} more than once, or after iterating it.")
    if state is _State.DONE:
        raise RuntimeError(f"Cannot enter a {kind} once it has been closed or has ended.")


EMPTY: Final[deque[Any]] = deque()

#: What the private idle-aware iterators yield when a heartbeat is due.
IDLE: Final = object()
