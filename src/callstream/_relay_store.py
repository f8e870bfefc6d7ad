"""What a relay stores: the interface between the relay's lifecycle and its storage.

`Relay` (in `_relay.py`) holds every rule of publishing and subscribing once:
keys, attempts, outcomes, subscriptions, linger, cancellation. A storage is a
class that keeps runs and their events and answers reads; `_memory_store.py`
keeps them in this process, `_redis_store.py` in Redis. A store never runs a
producer and never decides an outcome: it records what it is told, assigns
positions (`Event.id`), trims to `maxlen`, expires finished runs after `ttl`
and wakes readers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from ._summary import Summary
from .errors import StreamGap
from .events import Event

__all__ = (
    "ENDED",
    "Batch",
    "Face",
    "LocalStore",
    "Outcome",
    "Reader",
    "RelayStatus",
    "RelayStore",
    "event_position",
)

Face = Literal["sync", "async"]
RelayStatus = Literal["queued", "running", "completed", "interrupted", "error", "timeout", "cancelled", "lost"]

#: The statuses of a run that has ended.
ENDED: Final = frozenset({"completed", "interrupted", "error", "timeout", "cancelled", "lost"})
#: An ended run whose key takes a new attempt (a task retry, a redelivery).
RETRYABLE: Final = frozenset({"error", "lost"})


def event_position(after: str) -> int:
    """The position an event id names (ids are "1", "2", ...: the same in every store);
    `StreamGap` for anything else, which no store ever issued."""
    if not (after.isascii() and after.isdigit()) or len(after) > 18:
        raise StreamGap(f"{after[:40]!r} is not an event id of this relay (ids are '1', '2', ...)")
    return int(after)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as its subscribers are told."""

    status: RelayStatus
    #: what the producer returned (completed or interrupted runs)
    output: Any = None
    #: the exception for "error", "timeout" and "lost"
    error: BaseException | None = None
    #: the producer's own summary, when it recorded one
    summary: Summary | None = None


@dataclass(frozen=True)
class Batch:
    """What one read returns: events after the reader's position, then maybe the end.

    `outcome` is set only when `events` reach the end of the run: nothing
    follows them.
    """

    events: list[Event]
    outcome: Outcome | None
    status: RelayStatus


class Reader(Protocol):
    """One async subscription's reads of one run (`RelayStore.areader`): a store may keep
    state between them (a position it follows for the subscriber)."""

    async def aread(self, after: str | None, wait: float, limit: int) -> Batch:
        """`RelayStore.aread` of this reader's run."""

    def close(self) -> None:
        """The subscription ended: forget it."""


class RelayStore(Protocol):
    """Keeps runs and their events. Every method is safe from any thread.

    Each method has an awaitable twin (`abegin`, `aread`, ...) for the async
    face. A store may serve one face only (a Redis store given the user's
    sync or asyncio client): `need` says so with a `TypeError`.
    """

    #: True when several processes share the store: a subscriber's detach may
    #: happen elsewhere, so the relay looks again at an idle run (`linger`)
    shared: bool
    #: the faces it serves
    faces: frozenset[Face]

    def need(self, face: Face, method: str) -> None:
        """Raise `TypeError` when this store cannot serve `face` (called by `method`)."""

    def begin(self, key: str, *, queued: bool) -> int:
        """Start a run (or, `queued`, reserve its key); return its attempt number.

        A new key is created (`RelayFull` past `max_runs`). A queued key takes
        its one run. A key whose last attempt ended "error" or "lost" takes a
        new attempt: an `attempt` event is appended. A queued key cancelled
        before its start returns 0: the run must not start. Anything else
        raises `ValueError` (one key, one run at a time).
        """

    async def abegin(self, key: str, *, queued: bool) -> int:
        """`begin`, awaited."""

    def append(self, key: str, events: list[Event]) -> None:
        """Add events to a running run, giving each its `id`; trim to `maxlen`."""

    async def aappend(self, key: str, events: list[Event]) -> None:
        """`append`, awaited."""

    def finish(self, key: str, outcome: Outcome) -> bool:
        """Record the attempt's outcome (the first one wins); start its `ttl`."""

    async def afinish(self, key: str, outcome: Outcome) -> bool:
        """`finish`, awaited."""

    def hold(self, key: str, stop: Callable[[], None]) -> contextlib.AbstractContextManager[None]:
        """While the run is pumped in this process: keep it alive, and call `stop` on a cancel from elsewhere.

        A store shared by processes renews the producer's lease here (a
        producer that dies stops renewing: its run ends "lost").
        """

    def ahold(self, key: str, stop: Callable[[], None]) -> contextlib.AbstractAsyncContextManager[None]:
        """`hold` for a run pumped by a task."""

    def read(self, key: str, after: str | None, wait: float, limit: int) -> Batch:
        """Up to `limit` events after `after` (from the first kept, for None), waiting up to `wait` s for one.

        Raises `StreamNotFound` (unknown or expired key) or `StreamGap`
        (`after` was trimmed, or never issued).
        """

    async def aread(self, key: str, after: str | None, wait: float, limit: int) -> Batch:
        """`read`, awaiting instead of blocking."""

    def areader(self, key: str) -> Reader:
        """The reads of one async subscription of `key`, in order (each `after` the last read's end)."""

    def status(self, key: str) -> RelayStatus | None:
        """The run's status, or None for an unknown or expired key."""

    async def astatus(self, key: str) -> RelayStatus | None:
        """`status`, awaited."""

    def request_cancel(self, key: str) -> RelayStatus:
        """Ask the run to stop; a queued run ends "cancelled" at once. Return the status."""

    async def arequest_cancel(self, key: str) -> RelayStatus:
        """`request_cancel`, awaited."""

    def cancel_requested(self, key: str) -> bool:
        """Whether the run was asked to stop (the producer checks it)."""

    async def acancel_requested(self, key: str) -> bool:
        """`cancel_requested`, awaited."""

    def attach(self, key: str) -> None:
        """A subscriber starts reading (for `linger`)."""

    async def aattach(self, key: str) -> None:
        """`attach`, awaited."""

    def detach(self, key: str) -> int:
        """A subscriber left; return how many are left."""

    async def adetach(self, key: str) -> int:
        """`detach`, awaited."""

    def idle_for(self, key: str) -> float | None:
        """Seconds the run has had no subscriber (None: it has one, or it ended)."""

    async def aidle_for(self, key: str) -> float | None:
        """`idle_for`, awaited."""


class LocalStore:
    """The async twins, the holds and `need` of a store in this process's memory.

    Nothing it does blocks for long (a lock, no I/O): the twins call the sync
    methods; the producer is held by nothing but the relay's own reference.
    """

    shared = False
    faces: frozenset[Face] = frozenset(("sync", "async"))

    def need(self, face: Face, method: str) -> None:
        return None

    async def abegin(self, key: str, *, queued: bool) -> int:
        return self.begin(key, queued=queued)  # type: ignore[attr-defined,no-any-return]

    async def aappend(self, key: str, events: list[Event]) -> None:
        self.append(key, events)  # type: ignore[attr-defined]

    async def afinish(self, key: str, outcome: Outcome) -> bool:
        return self.finish(key, outcome)  # type: ignore[attr-defined,no-any-return]

    @contextlib.contextmanager
    def hold(self, key: str, stop: Callable[[], None]) -> Iterator[None]:
        yield

    @contextlib.asynccontextmanager
    async def ahold(self, key: str, stop: Callable[[], None]) -> AsyncIterator[None]:
        yield

    def areader(self, key: str) -> Reader:
        return PlainReader(self, key)  # type: ignore[arg-type]

    async def astatus(self, key: str) -> RelayStatus | None:
        return self.status(key)  # type: ignore[attr-defined,no-any-return]

    async def arequest_cancel(self, key: str) -> RelayStatus:
        return self.request_cancel(key)  # type: ignore[attr-defined,no-any-return]

    async def acancel_requested(self, key: str) -> bool:
        return self.cancel_requested(key)  # type: ignore[attr-defined,no-any-return]

    async def aattach(self, key: str) -> None:
        self.attach(key)  # type: ignore[attr-defined]

    async def adetach(self, key: str) -> int:
        return self.detach(key)  # type: ignore[attr-defined,no-any-return]

    async def aidle_for(self, key: str) -> float | None:
        return self.idle_for(key)  # type: ignore[attr-defined,no-any-return]


class PlainReader:
    """A `Reader` that is each read on its own: `store.aread`."""

    __slots__ = ("key", "store")

    def __init__(self, store: RelayStore, key: str) -> None:
        self.store = store
        self.key = key

    async def aread(self, after: str | None, wait: float, limit: int) -> Batch:
        return await self.store.aread(self.key, after, wait, limit)

    def close(self) -> None:
        return None
