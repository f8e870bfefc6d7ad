"""The one core under every face: lifecycle state, deadlines, outcome rules.

No waiting and no threads here. The faces (`_stream.py`, `_astream.py`, over
`_face.py`) decide *how* to wait for the sink; the worker (`_worker.py`)
decides *where* the producer runs. Everything else lives once, in `_Core`:
the lifecycle (`_State`), the three time limits, which outcome wins, and what
the consumer is told at the end.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import math
import threading
from dataclasses import dataclass
from time import monotonic
from typing import Any, Generic, Literal, TypeVar

from ._summary import StreamStats
from ._worker import AsyncProducer, Emit, Producer, PullWorker, TaskWorker, ThreadWorker, Worker
from .errors import Cancelled, StreamTimeout, TimeoutName
from .sinks import BoundedSink, DequeSink, QueueSink, Sink, SinkName, SinkStatistics, make_sink

R = TypeVar("R")

Status = Literal["new", "running", "completed", "interrupted", "error", "timeout", "cancelled"]

_ids = itertools.count(1)
#: guards `_settle` of every stream: taken once or twice per stream, so one lock for all
#: (a lock per stream is one more object per stream for the cycle collector to walk)
_SETTLE = threading.Lock()
#: sinks taken as they are (`make_sink`'s protocol check is for users' own)
_OWN_SINKS = (QueueSink, DequeSink, BoundedSink)


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
    """The state a face and its worker share, and the rules over it.

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
        worker: Worker | None = None,
    ) -> None:
        if not callable(producer):
            raise TypeError(f"producer must be callable as producer(emit), not {type(producer).__name__}")
        self.sink: Sink = sink if type(sink) in _OWN_SINKS else make_sink(sink)  # type: ignore[assignment]
        self.state = _State.NEW
        #: "running" until an outcome is settled (the faces say "new" before the start)
        self.status: Status = "running"
        self.value: Any = None  # the return value, or the exception
        self.worker_done = False
        #: the consumer must not wait for the worker any more (closed, or a
        #: deadline hit while the buffer was empty)
        self.stopping = False
        self.error_delivered = False
        #: the consumer reads only the text of token items (`tokens()` with no answer
        #: filter, over a sink that shows its items to no one): a runnable's handler
        #: then puts a token's text as the item (a `str`), not its `Event`
        self.texts_only = False
        #: set by a producer that returned because a LangGraph graph paused on
        #: an interrupt: it ends "interrupted" rather than "completed"
        self.interrupted = False
        self.id = next(_ids)
        # With `aproducer`, an async face whose sink never blocks runs the
        # producer as a task on the consumer's event loop instead of a thread.
        # With `worker`, that one (a `PullWorker`: the consumer steps the producer itself).
        if worker is None:
            worker = ThreadWorker(producer) if aproducer is None else TaskWorker(aproducer)
        self.worker: Worker = worker
        #: the worker while the consumer steps the producer itself (None once detached)
        self.pull = worker if type(worker) is PullWorker else None
        self.timeouts = timeouts  # None: no time limit at all
        self._sink_closed = False
        self.t_start = 0.0
        self.t_end: float | None = None
        self.stats = StreamStats()
        self.first_token_t: float | None = None
        self.last_event_t = 0.0
        self._recheck_at = 0.0  # the producer's next look at the deadlines (see make_emit)

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Hand the producer to the worker (once)."""
        if self.state is not _State.NEW:
            return
        self.state = _State.RUNNING
        self.t_start = self.last_event_t = self.stats.started = monotonic()
        try:
            self.worker.start(self)
        except BaseException:  # "can't start new thread": nothing runs, nothing to wait for
            self.state = _State.DONE
            self.status = "cancelled"
            raise

    def close(self) -> None:
        """Stop the producer at its next emit; never waits for it. Idempotent."""
        self.state = _State.DONE
        self.stopping = True
        self._settle("cancelled", None)
        self.worker.cancel()
        self.close_sink()  # may raise (a KeyboardInterrupt): a later close() retries

    def close_sink(self) -> None:
        """Close the sink (once): buffered items go, the producer's next put raises `Cancelled`."""
        if not self._sink_closed:
            self.sink.close()
            self._sink_closed = True

    # -- the worker's reports ---------------------------------------------------

    def record(self, exc: BaseException | None, value: Any) -> None:
        """Settle the producer's outcome: its return value, or its exception."""
        if exc is None:
            self._settle("interrupted" if self.interrupted else "completed", value)
        elif isinstance(exc, (Cancelled, asyncio.CancelledError)) and (self.stopping or self.status != "running"):
            # Ours: the consumer stopped us, or a deadline passed. Any other
            # Cancelled (say, another stream's) is an error like any other.
            self._settle("cancelled", exc)
        else:
            self._settle("error", exc)

    def worker_ended(self) -> None:
        """The producer returned or raised: the sink is finished.

        `worker_done` first: every item is in the sink by now, and a consumer
        woken by the sink's `finish` must find the worker done, or it would arm
        a wake-up that no one fires any more (a hang without a safety timer).
        """
        self.worker_done = True
        self.sink.finish()

    def _settle(self, status: Status, value: Any) -> bool:
        """Record the terminal outcome; the first one recorded wins."""
        with _SETTLE:
            if self.status == "running":
                self.status = status
                self.value = value
                self.t_end = monotonic()
                return True
        if status == "error" and self.status == "timeout":
            add_note(self.value, f"callstream: the producer then raised {value!r}")
        return False

    # -- the time limits ----------------------------------------------------------

    def _deadline(self, now: float) -> tuple[TimeoutName, float] | None:
        """The one reading of the three limits at `now`: the limit to enforce next
        and the seconds left until it (<= 0: it has passed), or None when no limit
        applies (none set, or only a first-token limit and the first token came).

        A limit that has passed wins over one still ahead; of several that have
        passed, the whole stream's, then the first token's, then the idle one.
        """
        t = self.timeouts
        assert t is not None
        nearest: tuple[TimeoutName, float] | None = None
        if t.total is not None:
            nearest = ("timeout", self.t_start + t.total - now)
        if t.first is not None and self.first_token_t is None:
            left = self.t_start + t.first - now
            if nearest is None or (nearest[1] > 0 and left < nearest[1]):
                nearest = ("first_token_timeout", left)
        if t.idle is not None:
            left = self.last_event_t + t.idle - now
            if nearest is None or (nearest[1] > 0 and left < nearest[1]):
                nearest = ("idle_timeout", left)
        return nearest

    def _timeout_error(self, limit: TimeoutName) -> StreamTimeout:
        t = self.timeouts
        assert t is not None
        seconds = {"timeout": t.total, "first_token_timeout": t.first, "idle_timeout": t.idle}[limit]
        assert seconds is not None
        return StreamTimeout(limit, seconds)

    # -- the producer side ----------------------------------------------------

    def make_emit(self, token: bool = True) -> Emit:
        """Return the function the producer calls for each item.

        Without time limits it is the sink's own `put`. With them, the
        deadlines are checked before each item, so an expired stream stops at
        the producer's next callback even when nobody is pulling.
        """
        put = self.sink.put
        if self.timeouts is None:
            return put
        core = self
        deadline = self._deadline

        def emit(item: Any) -> None:
            now = monotonic()
            # Deadlines only ever move later (the idle one with each item), so
            # until the nearest one read last time, none can have passed.
            if now >= core._recheck_at:
                nearest = deadline(now)
                if nearest is None:
                    core._recheck_at = math.inf
                elif nearest[1] > 0:
                    core._recheck_at = now + nearest[1]
                else:
                    core._settle("timeout", core._timeout_error(nearest[0]))
                    raise Cancelled
            if token and core.first_token_t is None:
                core.first_token_t = now
            core.last_event_t = now
            put(item)
            core.last_event_t = monotonic()  # time blocked on a full sink is not idle time

        return emit

    # -- the consumer side ----------------------------------------------------

    def enforce_deadlines(self) -> float | None:
        """Stop the stream if a time limit has passed; else how long the consumer
        may wait for the next item (None: no limit).

        Called only when the buffer is empty. When a limit has passed it
        records the timeout, stops the producer, closes the sink and returns 0.
        """
        if self.timeouts is None:
            return None
        now = monotonic()
        nearest = self._deadline(now)
        if nearest is None:
            return None
        limit, left = nearest
        if left > 0:
            return left
        # Whoever settled it (here, or the producer at its last emit), the
        # consumer stops waiting now: a producer task on this very loop
        # may not get to run again before the consumer returns.
        self._settle("timeout", self._timeout_error(limit))
        self.stopping = True
        self.worker.cancel()
        self.close_sink()
        return 0.0

    def raise_outcome(self, delivered: int, tokens: int) -> None:
        """The buffer is drained and the producer is done: end the consumer's iteration.

        Marks the stream done, then raises the producer's exception or the
        `StreamTimeout` (once; later calls return), or returns for a completed,
        interrupted or cancelled stream (the face then ends its iteration).
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
            self.worker.cancel()
            self.close_sink()
            raise exc

    def pending_error(self) -> BaseException | None:
        """A producer error the consumer has not been given (for notes)."""
        if self.status == "error" and not self.error_delivered:
            exc: BaseException = self.value
            return exc
        return None

    def statistics(self) -> SinkStatistics:
        return self.sink.statistics()
