"""`MemoryStore`: a relay's runs and events, kept in this process.

One lock guards every run; each run has a condition on that lock (sync
readers) and a list of futures (async readers), so an append wakes only the
readers of its own run. Positions are `"1"`, `"2"`, ... per key, continuing
across attempts. Expiry is lazy: a finished run is dropped when it is next
looked up after its `ttl`, and on each new run (oldest ended first).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from time import monotonic
from typing import Any

from ._relay_store import ENDED, RETRYABLE, Batch, LocalStore, Outcome, RelayStatus, event_position
from .errors import ProducerLost, RelayFull, StreamGap, StreamNotFound, short_key
from .events import Event

__all__ = ("MemoryStore",)


_new = tuple.__new__


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Run:
    __slots__ = (
        "attempt",
        "cancel",
        "changed",
        "created",
        "ended",
        "events",
        "first",
        "idle_since",
        "outcome",
        "status",
        "subscribers",
        "waiters",
    )

    def __init__(self, lock: threading.Lock, now: float, status: RelayStatus) -> None:
        self.status: RelayStatus = status
        self.events: list[Event] = []
        self.first = 1  # the position of events[0]
        self.attempt = 0
        self.outcome: Outcome | None = None
        self.created = now
        self.ended: float | None = None
        self.cancel = False
        self.subscribers = 0
        self.idle_since: float | None = now
        self.changed = threading.Condition(lock)
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def last(self) -> int:
        """The position of the last event issued (0: none yet)."""
        return self.first + len(self.events) - 1


class MemoryStore(LocalStore):
    """Runs and events in a dict, under one lock."""

    def __init__(
        self,
        *,
        maxlen: int,
        ttl: float,
        max_runs: int,
        queue_timeout: float,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.maxlen = maxlen
        self.ttl = ttl
        self.max_runs = max_runs
        self.queue_timeout = queue_timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._ended: OrderedDict[str, float] = OrderedDict()  # key -> end time, oldest first

    # -- lookups (under the lock) ------------------------------------------------

    def _find(self, key: str) -> _Run | None:
        run = self._runs.get(key)
        if run is None:
            return None
        now = self.clock()
        if run.ended is not None and now - run.ended >= self.ttl:
            self._drop(key)
            return None
        if run.status == "queued" and now - run.created >= self.queue_timeout:
            error = ProducerLost(
                f"the run reserved under {short_key(key)!r} was not started within "
                f"queue_timeout={self.queue_timeout:g} s"
            )
            self._end(key, run, Outcome("lost", error=error))
        return run

    def _get(self, key: str) -> _Run:
        run = self._find(key)
        if run is None:
            raise StreamNotFound(key)
        return run

    def _drop(self, key: str) -> None:
        del self._runs[key]
        self._ended.pop(key, None)

    def _sweep(self) -> None:
        now = self.clock()
        while self._ended:
            key, ended = next(iter(self._ended.items()))
            if now - ended < self.ttl:
                break
            self._drop(key)

    def _end(self, key: str, run: _Run, outcome: Outcome) -> None:
        run.status = outcome.status
        run.outcome = outcome
        run.ended = self.clock()
        self._ended[key] = run.ended
        self._ended.move_to_end(key)
        self._notify(run)

    def _notify(self, run: _Run) -> None:
        run.changed.notify_all()
        if run.waiters:
            waiters, run.waiters = run.waiters, []
            for loop, fut in waiters:
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                    loop.call_soon_threadsafe(_wake, fut)

    # -- the producer side ----------------------------------------------------------

    def begin(self, key: str, *, queued: bool) -> int:
        with self._lock:
            run = self._find(key)
            if run is None:
                self._sweep()
                if len(self._runs) >= self.max_runs:
                    raise RelayFull(
                        f"this relay already keeps max_runs={self.max_runs} runs; "
                        f"finished runs are released {self.ttl:g} s (ttl) after they end"
                    )
                run = self._runs[key] = _Run(self._lock, self.clock(), "queued" if queued else "running")
                run.attempt = 0 if queued else 1
                return max(run.attempt, 1)
            if queued:
                raise ValueError(f"the key {short_key(key)!r} is already in use")
            if run.status == "queued":
                run.status = "running"
                run.attempt = 1
                run.idle_since = self.clock() if run.subscribers == 0 else None
                self._notify(run)
                return 1
            if run.status == "cancelled" and run.attempt == 0:
                return 0  # reserved, then cancelled before its start
            if run.status in RETRYABLE:
                previous = run.outcome
                run.attempt += 1
                run.status = "running"
                run.outcome = None
                run.ended = None
                run.cancel = False
                self._ended.pop(key, None)
                error = previous.error if previous is not None else None
                data = {
                    "attempt": run.attempt,
                    "previous": {
                        "status": previous.status if previous is not None else "lost",
                        "error": None if error is None else f"{type(error).__name__}: {error}",
                    },
                }
                self._append(run, [Event("attempt", data=data)])
                return run.attempt
            raise ValueError(
                f"a run was already published under the key {short_key(key)!r} (status {run.status!r}); "
                "a key takes a new run only when reserved, or after its last attempt ended 'error' or 'lost'"
            )

    def append(self, key: str, events: list[Event]) -> None:
        with self._lock:
            run = self._runs.get(key)
            if run is None or run.status != "running":
                return  # expired, or ended (cancelled) while the producer was between callbacks
            self._append(run, events)

    def _append(self, run: _Run, events: list[Event]) -> None:
        seq = run.last
        kept = run.events
        add = kept.append
        for event in events:
            seq += 1
            add(_new(Event, (*event[:-1], str(seq))))  # event._replace(id=...), at a third of the cost
        excess = len(kept) - self.maxlen
        if excess > 0:
            del kept[:excess]
            run.first += excess
        self._notify(run)

    def finish(self, key: str, outcome: Outcome) -> bool:
        with self._lock:
            run = self._runs.get(key)
            if run is None or run.status in ENDED:
                return False
            self._end(key, run, outcome)
            return True

    def request_cancel(self, key: str) -> RelayStatus:
        with self._lock:
            run = self._get(key)
            if run.status == "queued":
                self._end(key, run, Outcome("cancelled"))
            elif run.status == "running":
                run.cancel = True
            return run.status

    # -- the subscriber side ----------------------------------------------------------

    def _position(self, key: str, run: _Run, after: str | None) -> int:
        """The reader's position as an int, or StreamGap."""
        if after is None:
            if run.first > 1:
                raise StreamGap(
                    f"the first {run.first - 1} event(s) of {short_key(key)!r} are no longer kept "
                    f"(maxlen={self.maxlen}); the oldest kept event follows id {run.first - 1}"
                )
            return 0
        position = event_position(after)
        if position > run.last:
            raise StreamGap(f"no event {after!r} was issued under {short_key(key)!r} (the last is {run.last})")
        if position < run.first - 1:
            raise StreamGap(
                f"the events after {after!r} of {short_key(key)!r} are no longer kept "
                f"(maxlen={self.maxlen}); the oldest kept event is {run.first}"
            )
        return position

    def _batch(self, key: str, run: _Run, position: int, limit: int) -> Batch:
        start = position + 1 - run.first
        events = run.events[start : start + limit]
        outcome = run.outcome if run.outcome is not None and position + len(events) == run.last else None
        return Batch(events, outcome, run.status)

    def _ready(self, run: _Run, position: int) -> bool:
        return position < run.last or run.outcome is not None

    def read(self, key: str, after: str | None, wait: float, limit: int) -> Batch:
        with self._lock:
            run = self._get(key)
            position = self._position(key, run, after)
            if not self._ready(run, position) and wait > 0:
                run.changed.wait(wait)
                run = self._get(key)
                position = self._position(key, run, after)
            return self._batch(key, run, position, limit)

    async def aread(self, key: str, after: str | None, wait: float, limit: int) -> Batch:
        with self._lock:
            run = self._get(key)
            position = self._position(key, run, after)
            if self._ready(run, position) or wait <= 0:
                return self._batch(key, run, position, limit)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            run.waiters.append((asyncio.get_running_loop(), fut))
        try:
            await asyncio.wait_for(fut, wait)
        except TimeoutError:
            pass
        with self._lock:
            run = self._get(key)
            return self._batch(key, run, self._position(key, run, after), limit)

    def status(self, key: str) -> RelayStatus | None:
        with self._lock:
            run = self._find(key)
            return None if run is None else run.status

    def cancel_requested(self, key: str) -> bool:
        with self._lock:
            run = self._runs.get(key)
            return run is not None and (run.cancel or run.status == "cancelled")

    def attach(self, key: str) -> None:
        with self._lock:
            run = self._runs.get(key)
            if run is not None:
                run.subscribers += 1
                run.idle_since = None

    def detach(self, key: str) -> int:
        with self._lock:
            run = self._runs.get(key)
            if run is None:
                return 0
            run.subscribers -= 1
            if run.subscribers == 0:
                run.idle_since = self.clock()
            return run.subscribers

    def idle_for(self, key: str) -> float | None:
        with self._lock:
            run = self._runs.get(key)
            if run is None or run.status in ENDED or run.idle_since is None:
                return None
            return self.clock() - run.idle_since

    def counts(self) -> dict[str, Any]:
        """Runs kept, by status (for `repr` and tests)."""
        with self._lock:
            self._sweep()
            out: dict[str, Any] = {}
            for run in self._runs.values():
                out[run.status] = out.get(run.status, 0) + 1
            return out
