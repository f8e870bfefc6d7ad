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

from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from ._summary import Summary
from .events import Event

__all__ = ("ENDED", "Batch", "Outcome", "RelayStatus", "RelayStore")

RelayStatus = Literal["queued", "running", "completed", "interrupted", "error", "timeout", "cancelled", "lost"]

#: The statuses of a run that has ended.
ENDED: Final = frozenset({"completed", "interrupted", "error", "timeout", "cancelled", "lost"})
#: An ended run whose key takes a new attempt (a task retry, a redelivery).
RETRYABLE: Final = frozenset({"error", "lost"})


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


class RelayStore(Protocol):
    """Keeps runs and their events. Every method is safe from any thread."""

    def begin(self, key: str, *, queued: bool) -> int:
        """Start a run (or, `queued`, reserve its key); return its attempt number.

        A new key is created (`RelayFull` past `max_runs`). A queued key takes
        its one run. A key whose last attempt ended "error" or "lost" takes a
        new attempt: an `attempt` event is appended. A queued key cancelled
        before its start returns 0: the run must not start. Anything else
        raises `ValueError` (one key, one run at a time).
        """

    def append(self, key: str, events: list[Event]) -> None:
        """Add events to a running run, giving each its `id`; trim to `maxlen`."""

    def finish(self, key: str, outcome: Outcome) -> bool:
        """Record the attempt's outcome (the first one wins); start its `ttl`."""

    def read(self, key: str, after: str | None, wait: float, limit: int) -> Batch:
        """Up to `limit` events after `after` (from the first kept, for None), waiting up to `wait` s for one.

        Raises `StreamNotFound` (unknown or expired key) or `StreamGap`
        (`after` was trimmed, or never issued).
        """

    async def aread(self, key: str, after: str | None, wait: float, limit: int) -> Batch:
        """`read`, awaiting instead of blocking."""

    def status(self, key: str) -> RelayStatus | None:
        """The run's status, or None for an unknown or expired key."""

    def request_cancel(self, key: str) -> RelayStatus:
        """Ask the run to stop; a queued run ends "cancelled" at once. Return the status."""

    def cancel_requested(self, key: str) -> bool:
        """Whether the run was asked to stop (the producer checks it)."""

    def attach(self, key: str) -> None:
        """A subscriber starts reading (for `linger`)."""

    def detach(self, key: str) -> int:
        """A subscriber left; return how many are left."""

    def idle_for(self, key: str) -> float | None:
        """Seconds the run has had no subscriber (None: it has one, or it ended)."""
