"""Sinks: the buffer between the producer (callbacks) and the consumer.

A sink is a small protocol with one producer side and one consumer side:

- the producer calls `put(item)` for each item, then `finish()` once;
- the consumer calls `take(timeout)` to get the items available now, and
  `set_wakeup(fn)` to be told from the producer's thread when more arrive
  (the async face uses that to wait without blocking the event loop);
- `close()` is the consumer leaving: buffered items are discarded, every later
  `put` raises `Cancelled`, and a producer blocked in `put` is released.

`Cancelled` is defined in `callstream.errors` and importable from here too.

Three sinks ship. Any object following the `Sink` protocol works too;
`callstream.testing.check_sink(make_sink)` runs the conformance checks on it.

End of stream is never an item: `None`, `""`, `"[DONE]"`, exceptions and
objects whose `__eq__` always returns `True` are data like any other.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, final, get_args, runtime_checkable

from .errors import Cancelled, StreamOverflow
from .events import merge_tokens, token_text

__all__ = (
    "BoundedSink",
    "Cancelled",
    "DequeSink",
    "OverflowPolicy",
    "QueueSink",
    "Sink",
    "SinkStatistics",
)

OverflowPolicy = Literal["block", "drop_oldest", "drop_newest", "coalesce", "error"]
_POLICIES: Final = get_args(OverflowPolicy)


@dataclass(frozen=True)
class SinkStatistics:
    """A snapshot of a sink's state, for tests, logs and dashboards."""

    #: items buffered now
    buffered: int
    #: capacity (`None` for an unbounded sink)
    maxsize: int | None
    #: the most items buffered at once so far
    peak: int
    #: producers blocked in `put` waiting for room
    producers_waiting: int
    #: consumers blocked in `take` waiting for an item
    consumers_waiting: int
    #: token items dropped by a `drop_*` policy
    dropped: int
    #: token items merged into their neighbour by the `coalesce` policy
    coalesced: int
    #: whether `close()` was called
    closed: bool
    #: whether the producer called `finish()`
    finished: bool


@runtime_checkable
class Sink(Protocol):
    """What the stream needs from a buffer.

    `put` and `finish` run in the producer's thread; `take`, `set_wakeup` and
    `close` in the consumer's. Define the six methods on the class (on Python
    3.12+, `isinstance(x, Sink)` does not see methods forwarded by `__getattr__`). `close` and `set_wakeup` may also be called
    from any other thread (a finaliser, a web server's disconnect handler).
    """

    def put(self, item: Any) -> None:
        """Add one item. May block (a full bounded sink).

        Raises:
            Cancelled: the sink was closed, before or while waiting.
        """

    def finish(self) -> None:
        """Mark the end of the items. Never blocks, never raises."""

    def take(self, timeout: float | None) -> deque[Any]:
        """Return the items available now, oldest first, waiting up to `timeout`.

        `timeout=0` does not wait; `None` waits until an item arrives or the
        sink is finished or closed. An empty deque means no item is available
        yet. The caller pops from the left; the deque may be the sink's own
        buffer, in which case items put later appear in it too.
        """
        ...

    def set_wakeup(self, fn: Callable[[], None] | None) -> None:
        """Call `fn` once, from the producer's thread, on the next `put`,
        `finish` or `close`; `None` disarms it."""

    def close(self) -> None:
        """Discard buffered items, release a blocked producer and consumer,
        and make every later `put` raise `Cancelled`. Idempotent."""

    def statistics(self) -> SinkStatistics:
        """Return a snapshot of the sink's state."""
        ...


def _is_token(item: object) -> bool:
    """`BoundedSink`'s default `droppable`: the token items (`callstream.events.token_text`)."""
    return token_text(item) is not None


def _fire(fn: Callable[[], None] | None) -> None:
    if fn is not None:
        fn()


@final
class QueueSink:
    """An unbounded `queue.Queue`. The default sink.

    The consumer takes everything buffered in one step, so the per-item cost
    is one `Queue.put` in the producer.
    """

    __slots__ = ("_closed", "_ended", "_finished", "_peak", "_q", "_wakeup")

    def __init__(self) -> None:
        self._q: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._finished = False
        self._ended = False  # the consumer has seen the end marker
        self._peak = 0
        self._wakeup: Callable[[], None] | None = None

    def put(self, item: Any) -> None:
        if self._closed:
            raise Cancelled
        self._q.put(item)
        if self._wakeup is not None:
            self._wake()
        if self._closed:  # closed while we were putting: do not keep the item
            self._clear()
            raise Cancelled

    def _wake(self) -> None:
        # The swap under the queue's mutex, as `set_wakeup`: a wake-up armed by the
        # consumer between the load and the store is never overwritten (lost).
        with self._q.mutex:
            fn, self._wakeup = self._wakeup, None
        _fire(fn)

    def finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._q.put(_END)
            self._wake()

    def take(self, timeout: float | None) -> deque[Any]:
        if self._ended or self._closed:
            return deque()
        q = self._q
        try:
            first = q.get(timeout=timeout) if timeout != 0 else q.get_nowait()
        except queue.Empty:
            return deque()
        with q.mutex:
            items: deque[Any] = q.queue
            q.queue = deque()
        items.appendleft(first)
        if items[-1] is _END:
            items.pop()
            self._ended = True
        if self._closed:
            return deque()
        if len(items) > self._peak:
            self._peak = len(items)
        return items

    def set_wakeup(self, fn: Callable[[], None] | None) -> None:
        with self._q.mutex:
            self._wakeup = fn

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._clear()
        self._q.put(_END)  # wake a consumer blocked in get()
        self._wake()

    def _clear(self) -> None:
        with self._q.mutex:
            self._q.queue.clear()

    def statistics(self) -> SinkStatistics:
        q = self._q
        with q.mutex:
            buffered = sum(1 for x in q.queue if x is not _END)
            consumers = len(q.not_empty._waiters)  # type: ignore[attr-defined]
        return SinkStatistics(
            buffered=buffered,
            maxsize=None,
            peak=max(self._peak, buffered),
            producers_waiting=0,
            consumers_waiting=consumers,
            dropped=0,
            coalesced=0,
            closed=self._closed,
            finished=self._finished,
        )

    def __repr__(self) -> str:
        return _repr(self)


#: Whether this interpreter runs with the GIL. `DequeSink`'s lock-free `put` needs it: on a
#: free-threaded CPython with the GIL off (`sys._is_gil_enabled()` false) every `DequeSink`
#: takes its locking `put` instead. Read at import; a test sets it to force that path.
GIL: bool = getattr(sys, "_is_gil_enabled", lambda: True)()


#: makes each DequeSink's lock once (`DequeSink._locked`)
_MAKING = threading.Lock()


@final
class DequeSink:
    """An unbounded `collections.deque` with a `threading.Condition`.

    The fastest hand-off: `put` is a lock-free `deque.append` followed by one
    flag check, and takes the lock only while the consumer waits (or after
    `close()`); the consumer pops straight from the sink's deque.

    What the lock-free path assumes: the GIL. The producer appends, then reads
    the flag; a consumer about to wait sets the flag under the lock, then looks
    at the deque again. One of the two sees the other's write only if stores
    and loads are not reordered between the threads, which the GIL guarantees
    (every switch is a full barrier). On a free-threaded build with the GIL off
    they may be, and a wake-up could be lost, so there `put` appends and checks
    the flag under the lock (`callstream.sinks.GIL` is False), at the cost of
    one uncontended lock per item.
    """

    __slots__ = (
        "_buf",
        "_closed",
        "_cond",
        "_finished",
        "_flag",
        "_gil",
        "_lock",
        "_peak",
        "_waiting",
        "_wakeup",
    )

    def __init__(self) -> None:
        self._buf: deque[Any] = deque()
        # Made when first needed (`_locked`), not with the sink: a consumer that steps
        # its producer itself (a pulled model) needs it only at the end, and at a
        # thousand live streams each object alive costs the cycle collector.
        self._lock: threading.Lock | None = None
        # Made by the first consumer that blocks (a thread's `take`), over the lock:
        # a consumer on an event loop, or stepping its producer itself, never needs one.
        self._cond: threading.Condition | None = None
        self._closed = False
        self._finished = False
        self._waiting = 0
        self._wakeup: Callable[[], None] | None = None
        # The one flag the producer's fast path reads: True while a consumer
        # waits, a wakeup is armed, or the sink is closed.
        self._flag = False
        self._peak = 0
        self._gil = GIL

    def put(self, item: Any) -> None:
        # A method, not a closure over the sink: nothing per sink but the sink
        # (a closure, its defaults and a bound append were three objects more,
        # and a cycle). After `finish()` a put still appends; after `close()` it
        # raises `Cancelled` (the flag is set, `_after_put` clears).
        if self._gil:
            self._buf.append(item)
            if self._flag:
                self._after_put()
        else:
            self._locked_put(item)

    def _locked_put(self, item: Any) -> None:
        """`put` without the GIL: the append and the flag check under the lock."""
        with self._locked():
            if self._closed:
                raise Cancelled
            self._buf.append(item)
            if not self._flag:
                return
            fn, self._wakeup = self._wakeup, None
            self._flag = self._waiting > 0
            if self._cond is not None:
                self._cond.notify_all()
        _fire(fn)

    def _locked(self) -> threading.Lock:
        """The sink's lock, made once (under a lock of the module's)."""
        lock = self._lock
        if lock is None:
            with _MAKING:
                lock = self._lock
                if lock is None:
                    lock = self._lock = threading.Lock()
        return lock

    def _after_put(self) -> None:
        if self._closed:
            # close() sets the flag before clearing, so either it cleared our
            # item or we do it here: nothing put after close() is kept.
            self._buf.clear()
            raise Cancelled
        self._notify()

    def _notify(self) -> None:
        with self._locked():
            fn, self._wakeup = self._wakeup, None
            self._flag = self._closed or self._waiting > 0
            if self._cond is not None:
                self._cond.notify_all()
        _fire(fn)

    def finish(self) -> None:
        self._finished = True
        self._notify()

    def take(self, timeout: float | None) -> deque[Any]:
        buf = self._buf
        if not buf and timeout != 0 and not (self._finished or self._closed):
            with self._locked():
                self._waiting += 1
                self._flag = True
                try:
                    if not buf and not (self._finished or self._closed):
                        if self._cond is None:
                            self._cond = threading.Condition(self._locked())
                        self._cond.wait(timeout)
                finally:
                    self._waiting -= 1
                    self._flag = self._closed or self._waiting > 0 or self._wakeup is not None
        if self._closed:
            return deque()
        n = len(buf)
        if n > self._peak:
            self._peak = n
        return buf

    def set_wakeup(self, fn: Callable[[], None] | None) -> None:
        with self._locked():
            self._wakeup = fn
            self._flag = self._closed or fn is not None or self._waiting > 0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._flag = True
        self._buf.clear()
        self._notify()

    def statistics(self) -> SinkStatistics:
        with self._locked():
            waiting = self._waiting
        buffered = len(self._buf)
        return SinkStatistics(
            buffered=buffered,
            maxsize=None,
            peak=max(self._peak, buffered),
            producers_waiting=0,
            consumers_waiting=waiting,
            dropped=0,
            coalesced=0,
            closed=self._closed,
            finished=self._finished,
        )

    def __repr__(self) -> str:
        return _repr(self)


@final
class BoundedSink:
    """A bounded buffer: backpressure, or a policy for when it is full.

    Args:
        maxsize: how many items it holds. `0` is a rendezvous (only with
            `overflow="block"`): `put` returns once the consumer took the item.
        overflow: what `put` does when the buffer is full:

            - `"block"`: wait for room. Closing the stream releases it.
            - `"drop_oldest"`: drop the oldest buffered token item.
            - `"drop_newest"`: drop the incoming token item.
            - `"coalesce"`: merge the incoming token item into the last one
              of the same run (`str` items are concatenated), or merge the
              first adjacent pair that can be merged: memory stays bounded and
              no text is lost. When nothing can be merged, it waits as `block`.
            - `"error"`: raise `StreamOverflow` in the producer.

            Only token items (`str`, or token `Event`s) are ever dropped or
            merged; every other item is kept, even past `maxsize`.
        droppable: `droppable(item)` says whether a policy may drop or merge
            `item`; None (the default): the token items, those for which
            `callstream.events.token_text(item)` is not None.
        merge: `merge(first, later)` merges two adjacent droppable items
            into one, or returns None when they do not merge; None (the
            default): `callstream.events.merge_tokens`. Both hooks run in
            the producer's thread, under the sink's lock: keep them quick.

    The sink never looks inside items itself: these two hooks are its only
    judgement of them, so a sink of your own payloads can be bounded too.

    Raises:
        TypeError: `maxsize` is not an int, or a hook is neither callable nor None.
        ValueError: `maxsize` is negative, `overflow` is unknown, or
            `maxsize=0` with a policy other than `"block"`.
    """

    __slots__ = (
        "_appended",
        "_buf",
        "_closed",
        "_coalesced",
        "_cond",
        "_consumers",
        "_droppable",
        "_dropped",
        "_finished",
        "_lock",
        "_maxsize",
        "_merge",
        "_out",
        "_overflow",
        "_peak",
        "_producers",
        "_room",
        "_taken",
        "_wakeup",
    )

    def __init__(
        self,
        maxsize: int = 256,
        overflow: OverflowPolicy = "block",
        *,
        droppable: Callable[[Any], bool] | None = None,
        merge: Callable[[Any, Any], Any | None] | None = None,
    ) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError(f"maxsize must be an int >= 0, not {type(maxsize).__name__}")
        if maxsize < 0:
            raise ValueError(f"maxsize must be an int >= 0 (0 = rendezvous), not {maxsize}")
        if overflow not in _POLICIES:
            raise ValueError(f"overflow must be one of {', '.join(map(repr, _POLICIES))}; got {overflow!r}")
        if maxsize == 0 and overflow != "block":
            raise ValueError(f'maxsize=0 (rendezvous) needs overflow="block", not {overflow!r}')
        for name, hook in (("droppable", droppable), ("merge", merge)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable or None, not {type(hook).__name__}")
        self._droppable = _is_token if droppable is None else droppable
        self._merge = merge_tokens if merge is None else merge
        self._maxsize = maxsize
        self._overflow: OverflowPolicy = overflow
        self._room = maxsize or 1
        self._buf: deque[Any] = deque()
        self._out: deque[Any] = deque()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._finished = False
        self._producers = 0
        self._consumers = 0
        self._dropped = 0
        self._coalesced = 0
        self._peak = 0
        self._appended = 0
        self._taken = 0
        self._wakeup: Callable[[], None] | None = None

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def overflow(self) -> OverflowPolicy:
        return self._overflow

    def put(self, item: Any) -> None:
        with self._lock:
            if self._closed:
                raise Cancelled
            buf = self._buf
            if len(buf) >= self._room and not self._make_room(item):
                return  # dropped or merged
            buf.append(item)
            self._appended += 1
            if len(buf) > self._peak:
                self._peak = len(buf)
            if self._consumers:
                self._cond.notify()
            if self._wakeup is not None:
                fn, self._wakeup = self._wakeup, None
                fn()  # under the lock: a rendezvous waits below
            if self._maxsize == 0:  # rendezvous: wait until the consumer took it
                ticket = self._appended
                self._wait_for(lambda: self._taken >= ticket)

    def _wait_for(self, ready: Callable[[], bool]) -> None:
        """Wait (lock held) until `ready()`; raise Cancelled on close."""
        self._producers += 1
        try:
            while not ready():
                if self._closed:
                    raise Cancelled
                self._cond.wait()
        finally:
            self._producers -= 1
        if self._closed:
            raise Cancelled

    def _make_room(self, item: Any) -> bool:
        """Apply the overflow policy (lock held). False means `item` is consumed."""
        buf = self._buf
        room = self._room
        policy = self._overflow
        droppable, merge = self._droppable, self._merge
        if policy == "error":
            raise StreamOverflow(f"BoundedSink(maxsize={self._maxsize}) is full")
        if policy == "drop_newest" and droppable(item):
            self._dropped += 1
            return False
        if policy == "drop_oldest" and droppable(item):
            for i, old in enumerate(buf):
                if droppable(old):
                    del buf[i]
                    self._dropped += 1
                    return True
            self._dropped += 1  # nothing older can go: the newest token goes
            return False
        if policy == "coalesce" and droppable(item):
            merged = merge(buf[-1], item) if droppable(buf[-1]) else None
            if merged is not None:
                buf[-1] = merged
                self._coalesced += 1
                return False
            for i in range(len(buf) - 1):
                merged = merge(buf[i], buf[i + 1]) if droppable(buf[i]) and droppable(buf[i + 1]) else None
                if merged is not None:
                    buf[i] = merged
                    del buf[i + 1]
                    self._coalesced += 1
                    return True
        if policy in ("block", "coalesce"):
            self._wait_for(lambda: len(buf) < room)
        return True  # the drop policies keep structural items past maxsize

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()
            fn, self._wakeup = self._wakeup, None
        _fire(fn)

    def take(self, timeout: float | None) -> deque[Any]:
        # One item at a time, so the producer's lead stays within maxsize + 1.
        with self._lock:
            buf = self._buf
            if not buf and timeout != 0 and not (self._finished or self._closed):
                self._consumers += 1
                try:
                    self._cond.wait(timeout)
                finally:
                    self._consumers -= 1
            if not buf or self._closed:
                return deque()
            item = buf.popleft()
            self._taken += 1
            if self._producers:
                self._cond.notify_all()
        out = self._out  # reused: the consumer empties it before the next take
        out.append(item)
        return out

    def set_wakeup(self, fn: Callable[[], None] | None) -> None:
        with self._cond:
            self._wakeup = fn

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._buf.clear()
            self._cond.notify_all()
            fn, self._wakeup = self._wakeup, None
        _fire(fn)

    def statistics(self) -> SinkStatistics:
        with self._cond:
            return SinkStatistics(
                buffered=len(self._buf),
                maxsize=self._maxsize,
                peak=self._peak,
                producers_waiting=self._producers,
                consumers_waiting=self._consumers,
                dropped=self._dropped,
                coalesced=self._coalesced,
                closed=self._closed,
                finished=self._finished,
            )

    def __repr__(self) -> str:
        return _repr(self, f"maxsize={self._maxsize}, overflow={self._overflow!r}")


_END: Final = object()  # QueueSink's private end marker; never handed out

SinkName = Literal["queue", "deque", "bounded"]
_SINK_NAMES: Final = get_args(SinkName)


def _repr(sink: Sink, args: str = "") -> str:
    s = sink.statistics()
    state = "closed" if s.closed else "finished" if s.finished else "open"
    size = "" if s.maxsize is None else f"/{s.maxsize}"
    waiting = f", producers waiting: {s.producers_waiting}" if s.producers_waiting else ""
    return f"<{type(sink).__name__}({args}) {state}, buffered: {s.buffered}{size}, peak: {s.peak}{waiting}>"


def make_sink(sink: SinkName | Sink) -> Sink:
    """Turn the `sink=` argument into a fresh sink, checking it."""
    if isinstance(sink, str):
        if sink == "queue":
            return QueueSink()
        if sink == "deque":
            return DequeSink()
        if sink == "bounded":
            return BoundedSink()
        raise ValueError(f"unknown sink {sink!r}; use one of {', '.join(map(repr, _SINK_NAMES))} or a Sink instance")
    if isinstance(sink, type):
        # `sink=DequeSink` would pass the protocol check (its methods are on the
        # class) and then fail in the worker, unbound: say so here instead.
        raise TypeError(
            f"sink must be a Sink instance, not the class {sink.__name__}: write sink={sink.__name__}() "
            f"(or one of {', '.join(map(repr, _SINK_NAMES))})"
        )
    if isinstance(sink, Sink):
        return sink
    raise TypeError(
        f"sink must be one of {', '.join(map(repr, _SINK_NAMES))} or a Sink instance "
        f"(put/finish/take/set_wakeup/close/statistics), not {type(sink).__name__}"
    )


def never_blocks(sink: Sink) -> bool:
    """Whether `put` can never block (so a producer may run on the event loop's thread)."""
    if isinstance(sink, (QueueSink, DequeSink)):
        return True
    return isinstance(sink, BoundedSink) and sink.overflow in ("drop_oldest", "drop_newest", "error")
