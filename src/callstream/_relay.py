"""Relays: publish a run, let any number of subscribers read it from any position.

`Relay` holds the lifecycle once — keys, attempts, outcomes, subscriptions,
`linger`, cancellation — over a `RelayStore` that keeps runs and events
(`_relay_store.py`). `MemoryRelay` is that lifecycle over `MemoryStore`; the
Redis relay is the same lifecycle over a Redis store.

A published run is pumped by the relay (a daemon thread for a `Stream`, a
task on the caller's loop for an `AsyncStream`): every item it yields becomes
an event with a position. A subscription is a `Stream`/`AsyncStream` whose
producer reads the store from a position; it never slows the run.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import threading
import time
from asyncio import events
from collections.abc import Callable
from typing import Any, Final, TypeVar

from ._astream import AsyncStream
from ._core import Timeouts, _Core, _State
from ._face import _BaseStream
from ._memory_store import MemoryStore
from ._relay_store import Batch, Face, Outcome, RelayStatus, RelayStore, event_position
from ._stream import Stream
from ._summary import StreamStats, Summary
from .events import Event
from .sinks import SinkName

__all__ = ("MemoryRelay", "Relay")

T = TypeVar("T")

#: Longest single wait of a subscription's reader: bounds how long it takes to
#: notice a closed subscription, an expired reservation or a lost producer.
_READ_SLICE: Final = 0.25
#: A subscription stops reading while its consumer has this many events unread.
_MAX_UNREAD: Final = 1024
#: The most events one read takes from the store.
_READ_CHUNK: Final = 256
#: A subscription's sink: the reader thread appends, the consumer pops (lock-free while both run).
_SINK: Final[SinkName] = "deque"


def check_key(key: object) -> str:
    """A given key: 1 to 200 printable characters, no whitespace."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    if not (0 < len(key) <= 200) or not key.isprintable() or any(c.isspace() for c in key):
        raise ValueError("key must be 1 to 200 printable characters with no whitespace")
    return key


def _check_after(after: object) -> str | None:
    if after is not None and not isinstance(after, str):
        raise TypeError(f"after must be an event id (a str, such as event.id) or None, not {type(after).__name__}")
    return after


def _check_seconds(name: str, value: object, *, zero: bool = False, none: bool = False) -> Any:
    if value is None and none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        also = ", or None" if none else ""
        raise ValueError(f"{name} must be a positive number of seconds{also}; got {value!r}")
    return value


def _check_count(name: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    return value


def as_event(item: Any) -> Event:
    """What a relay keeps for a stream's item: events as they are, `str` as tokens."""
    if type(item) is Event:
        return item
    if type(item) is str:
        return Event("token", text=item)
    return Event("custom", name="item", data={"value": item})


def _feed(stats: StreamStats, event: Event) -> None:
    """Rebuild a subscriber's statistics from the events, as the callback handler does."""
    kind = event.kind
    if kind == "token":
        if event.text:
            stats.on_token()
    elif kind == "llm_start":
        stats.llm_calls += 1
    elif kind == "llm_end":
        stats.on_llm_end(event.data.get("output"))
    elif kind == "tool_start":
        stats.on_tool_start(event.run_id, event.name, event.data.get("input"))
    elif kind == "tool_end":
        stats.on_tool_end(event.run_id, result=event.data.get("output"))
    elif kind == "tool_error":
        error = event.data.get("error")
        stats.on_tool_end(event.run_id, error=error if isinstance(error, BaseException) else Exception(str(error)))


class _Writer:
    """A published stream's items into the store: one write per batch the face hands over."""

    __slots__ = ("batch", "error", "key", "store", "stream")

    def __init__(self, store: RelayStore, key: str, stream: _BaseStream[Any]) -> None:
        self.store = store
        self.key = key
        self.stream = stream
        self.batch: list[Event] = []
        self.error: BaseException | None = None

    def start(self) -> None:
        if self.store.cancel_requested(self.key):
            self.stream.close()  # cancelled between `begin` and the start

    async def astart(self) -> None:
        if await self.store.acancel_requested(self.key):
            self.stream.close()

    def add(self, item: Any) -> bool:
        """Keep the item; True when the face's batch is drained: time to write."""
        self.batch.append(as_event(item))
        return not self.stream._pending

    def flush(self) -> None:
        if self.batch:
            batch, self.batch = self.batch, []
            self.store.append(self.key, batch)

    async def aflush(self) -> None:
        if self.batch:
            batch, self.batch = self.batch, []
            await self.store.aappend(self.key, batch)


class Relay:
    """Publish runs and subscribe to them; the storage is the subclass's.

    Every method is safe from any thread; `apublish`, `arun` and
    `asubscribe` are for event-loop code.
    """

    def __init__(self, store: RelayStore, *, linger: float | None) -> None:
        self._store = store
        self._linger: float | None = _check_seconds("linger", linger, zero=True, none=True)
        #: streams published by this process, by key: `cancel` closes them at once
        self._local: dict[str, _BaseStream[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: makes a published stream's start and a cancel's close one or the other
        self._guard = threading.Lock()

    # -- publishing -----------------------------------------------------------------

    def reserve(self, key: str | None = None) -> str:
        """A key in state "queued", for a run started later (`run(stream, key=key)` in a worker).

        Subscribers may subscribe at once: they wait for its events. A reserved
        key that no run takes within `queue_timeout` ends "lost".
        """
        self._store.need("sync", "reserve")
        key = secrets.token_urlsafe(16) if key is None else check_key(key)
        self._store.begin(key, queued=True)
        return key

    async def areserve(self, key: str | None = None) -> str:
        """`reserve`, awaited (the async face)."""
        self._store.need("async", "areserve")
        key = secrets.token_urlsafe(16) if key is None else check_key(key)
        await self._store.abegin(key, queued=True)
        return key

    def publish(self, stream: Stream[Any], *, key: str | None = None) -> str:
        """Start an unstarted `Stream` detached, in a thread of its own; return its key at once.

        Raises:
            TypeError: not a `Stream` (an `AsyncStream` takes `apublish`).
            ValueError: the stream has started, or the key is taken (see `run`).
            RelayFull: `max_runs` runs are kept already.
        """
        self._check_stream(stream, Stream, "publish", "apublish")
        key = self._key(key)
        attempt = self._started(stream, key, self._store.begin(key, queued=False))
        if attempt:
            threading.Thread(
                target=self._pump_quietly, args=(key, stream), name=f"callstream-relay-{key[:6]}", daemon=True
            ).start()
        return key

    def run(self, stream: Stream[Any], *, key: str | None = None) -> Summary:
        """Publish a `Stream` and run it in the calling thread (a task body); return its `Summary`.

        A run that failed is recorded, then its error is re-raised here, so
        the task system sees the failure. On a reserved key cancelled before
        this call, the stream never starts and the summary says "cancelled".

        Raises:
            ValueError: the stream has started; or the key already has a run,
                unless the key was reserved or its last attempt ended "error"
                or "lost" (a retry: a new attempt under the same key).
        """
        self._check_stream(stream, Stream, "run", "arun")
        key = self._key(key)
        attempt = self._started(stream, key, self._store.begin(key, queued=False))
        if not attempt:
            return stream.summary
        return self._pump(key, stream)

    async def apublish(self, stream: AsyncStream[Any], *, key: str | None = None) -> str:
        """`publish` for an `AsyncStream`: the run is a task on the running loop."""
        self._check_stream(stream, AsyncStream, "apublish", "publish")
        key = self._key(key)
        attempt = self._started(stream, key, await self._store.abegin(key, queued=False))
        if attempt:
            task = asyncio.get_running_loop().create_task(self._apump_quietly(key, stream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return key

    async def arun(self, stream: AsyncStream[Any], *, key: str | None = None) -> Summary:
        """`run` for an `AsyncStream`, awaited on the running loop."""
        self._check_stream(stream, AsyncStream, "arun", "run")
        key = self._key(key)
        attempt = self._started(stream, key, await self._store.abegin(key, queued=False))
        if not attempt:
            return stream.summary
        return await self._apump(key, stream)

    def _check_stream(self, stream: object, face: type[Any], name: str, twin: str) -> None:
        self._store.need("sync" if face is Stream else "async", name)
        if not isinstance(stream, face):
            other = "an AsyncStream" if face is Stream else "a sync Stream"
            hint = f" ({other} takes relay.{twin}())" if isinstance(stream, _BaseStream) else ""
            raise TypeError(f"relay.{name}() takes a {face.__name__}, not {type(stream).__name__}{hint}")
        if stream._core.state is not _State.NEW:
            raise ValueError(f"relay.{name}() takes an unstarted stream: this one was entered or iterated already")

    @staticmethod
    def _key(key: str | None) -> str:
        return secrets.token_urlsafe(16) if key is None else check_key(key)

    def _started(self, stream: _BaseStream[Any], key: str, attempt: int) -> int:
        """The store began the run (`attempt`; 0: reserved, then cancelled before its start)."""
        if not attempt:  # the model never runs
            stream.close()
            return 0
        self._local[key] = stream
        if self._linger is not None:
            self._schedule_linger(key, self._linger)
        return attempt

    def _enter(self, stream: _BaseStream[Any]) -> bool:
        """Start a published stream, unless a cancel closed it first (False: it ends "cancelled").

        Atomic with `_close`: a cancel between `begin` and the start never
        makes the start fail.
        """
        with self._guard:
            if stream._core.state is not _State.NEW:
                return False
            stream._core.start()  # what `with`/`async with` does once the state is checked
            return True

    def _close(self, stream: _BaseStream[Any]) -> None:
        with self._guard:
            stream.close()

    def _pump(self, key: str, stream: Stream[Any]) -> Summary:
        writer = _Writer(self._store, key, stream)
        with self._store.hold(key, lambda: self._close(stream)):
            try:
                if self._enter(stream):
                    try:
                        writer.start()
                        for item in stream:
                            if writer.add(item):
                                writer.flush()
                        writer.flush()
                    except BaseException as exc:
                        stream._note_consumer_error(exc)
                        raise
                    finally:
                        stream.close()
            except BaseException as exc:
                writer.error = exc
                raise
            finally:
                self._local.pop(key, None)
                self._store.finish(key, self._outcome(stream, writer.error))
        return stream.summary

    async def _apump(self, key: str, stream: AsyncStream[Any]) -> Summary:
        writer = _Writer(self._store, key, stream)
        async with self._store.ahold(key, lambda: self._close(stream)):
            try:
                if self._enter(stream):
                    try:
                        await writer.astart()
                        async for item in stream:
                            if writer.add(item):
                                await writer.aflush()
                        await writer.aflush()
                    except BaseException as exc:
                        stream._note_consumer_error(exc)
                        raise
                    finally:
                        stream.close()
            except BaseException as exc:
                writer.error = exc
                raise
            finally:
                self._local.pop(key, None)
                await self._store.afinish(key, self._outcome(stream, writer.error))
        return stream.summary

    def _pump_quietly(self, key: str, stream: Stream[Any]) -> None:
        try:
            self._pump(key, stream)
        except BaseException:  # recorded as the run's outcome; subscribers get it
            pass

    async def _apump_quietly(self, key: str, stream: AsyncStream[Any]) -> None:
        try:
            await self._apump(key, stream)
        except BaseException:
            pass

    @staticmethod
    def _outcome(stream: _BaseStream[Any], error: BaseException | None) -> Outcome:
        """How the attempt ended, from its stream."""
        status = stream.status
        if error is not None:
            return Outcome("timeout" if status == "timeout" else "error", error=error, summary=stream.summary)
        if status in ("completed", "interrupted"):
            return Outcome(status, output=stream._core.value, summary=stream.summary)
        return Outcome("cancelled", summary=stream.summary)

    # -- cancelling, status -------------------------------------------------------------

    def cancel(self, key: str) -> None:
        """Stop the run at its next callback (a queued run: before it starts). Idempotent.

        Raises:
            StreamNotFound: no run under this key (never published, or expired).
        """
        self._store.need("sync", "cancel")
        self._store.request_cancel(check_key(key))
        self._close_local(key)

    async def acancel(self, key: str) -> None:
        """`cancel`, awaited (the async face)."""
        self._store.need("async", "acancel")
        await self._store.arequest_cancel(check_key(key))
        self._close_local(key)

    def _close_local(self, key: str) -> None:
        stream = self._local.get(key)
        if stream is not None:
            self._close(stream)

    def status(self, key: str) -> RelayStatus | None:
        """`"queued"`, `"running"`, `"completed"`, `"interrupted"`, `"error"`, `"timeout"`,
        `"cancelled"`, `"lost"`, or None for an unknown or expired key."""
        self._store.need("sync", "status")
        return self._store.status(check_key(key))

    async def astatus(self, key: str) -> RelayStatus | None:
        """`status`, awaited (the async face)."""
        self._store.need("async", "astatus")
        return await self._store.astatus(check_key(key))

    def _schedule_linger(self, key: str, delay: float) -> None:
        if "sync" in self._store.faces:
            timer = threading.Timer(delay, self._linger_check, args=(key,))
            timer.daemon = True
            timer.start()
        else:  # an asyncio client only: the check is a task on this loop
            loop = asyncio.get_running_loop()
            loop.call_later(delay, self._spawn, self._alinger_check(key))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _linger_next(self, key: str, idle: float | None) -> float | None:
        """After an idle check: the delay of the next one, 0 to cancel now, None to stop checking."""
        linger = self._linger
        assert linger is not None
        if idle is None:
            # It has subscribers (a detach here schedules the next check), or it ended. A
            # shared store's subscribers may leave from another process: look again later.
            return max(linger, 0.1) if self._store.shared and key in self._local else None
        return 0 if idle >= linger - 1e-3 else linger - idle

    def _linger_check(self, key: str) -> None:
        delay = self._linger_next(key, self._store.idle_for(key))
        if delay == 0:
            try:
                self.cancel(key)
            except KeyError:
                pass
        elif delay is not None:
            self._schedule_linger(key, delay)

    async def _alinger_check(self, key: str) -> None:
        delay = self._linger_next(key, await self._store.aidle_for(key))
        if delay == 0:
            try:
                await self.acancel(key)
            except KeyError:
                pass
        elif delay is not None:
            self._schedule_linger(key, delay)

    # -- subscribing ----------------------------------------------------------------

    def subscribe(
        self,
        key: str,
        *,
        after: str | None = None,
        timeout: float | None = None,
        first_token_timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> Stream[Event]:
        """A `Stream` of the run's events, from the first (`after=None`) or right after `after`.

        Works while the run goes on or after it ended (what `ttl` keeps), any
        number of times, from any thread. The subscription ends as the run
        ended: its output and summary, end of iteration for a cancelled run,
        or the run's error raised after every event before it. Its time
        limits end this subscription, never the run.

        Raises:
            StreamNotFound: no run under this key (never published here, or expired).
            StreamGap: `after` was trimmed (`maxlen`) or never issued; also
                raised while iterating, by a subscriber that fell `maxlen` behind.
        """
        self._store.need("sync", "subscribe")
        key, after, timeouts = self._check_subscription(key, after, timeout, first_token_timeout, idle_timeout)
        core: _Core[Any]

        def follow(emit: Callable[[Any], None]) -> Any:
            return self._follow(core, key, after, emit)

        core = _Core(follow, _SINK, timeouts)
        return Stream(core)

    def asubscribe(
        self,
        key: str,
        *,
        after: str | None = None,
        timeout: float | None = None,
        first_token_timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> AsyncStream[Event]:
        """`subscribe` for event-loop code: an `AsyncStream` read by a task on the caller's loop.

        A relay that asks a server (`RedisRelay`) never blocks the caller's
        loop: called from a coroutine, or with an asyncio client only, it
        checks the syntax of the key and of `after` at the call, and raises
        `StreamNotFound` and `StreamGap` (an id never issued, or trimmed) at the
        first read. Await `astatus(key)` first to answer an unknown key before
        anything else (a web app's 404).
        """
        self._store.need("async", "asubscribe")
        key, after, timeouts = self._check_subscription(
            key, after, timeout, first_token_timeout, idle_timeout, face="async"
        )
        core: _Core[Any]

        def follow(emit: Callable[[Any], None]) -> Any:
            return self._follow(core, key, after, emit)

        async def afollow(emit: Callable[[Any], None]) -> Any:
            return await self._afollow(core, key, after, emit)

        core = _Core(follow, _SINK, timeouts, aproducer=afollow)
        return AsyncStream(core)

    def _check_subscription(
        self,
        key: str,
        after: str | None,
        timeout: float | None,
        first_token_timeout: float | None,
        idle_timeout: float | None,
        face: Face = "sync",
    ) -> tuple[str, str | None, Timeouts | None]:
        key = check_key(key)
        after = _check_after(after)
        timeouts = Timeouts.of(timeout, first_token_timeout, idle_timeout)
        store = self._store
        # On a loop's own thread a store that asks a server must not block it (as `Push.emit`)
        on_loop = face == "async" and store.shared and events._get_running_loop() is not None
        if "sync" in store.faces and not on_loop:
            store.read(key, after, 0, 0)  # StreamNotFound, StreamGap: now, not at the first next()
        elif after is not None:
            event_position(after)  # a malformed id: StreamGap now; the rest at the first read
        return key, after, timeouts

    def _follow(self, core: _Core[Any], key: str, after: str | None, emit: Callable[[Any], None]) -> Any:
        store = self._store
        store.attach(key)
        try:
            while not core.stopping:
                batch = store.read(key, after, _READ_SLICE, _READ_CHUNK)
                after = self._deliver(core, batch, after, emit)
                if batch.outcome is not None:
                    return self._ending(core, batch.outcome)
                while core.sink.statistics().buffered >= _MAX_UNREAD and not core.stopping:
                    time.sleep(0.005)  # a consumer that stopped reading: stop reading for it
            return None
        finally:
            self._detached(key)

    async def _afollow(self, core: _Core[Any], key: str, after: str | None, emit: Callable[[Any], None]) -> Any:
        store = self._store
        await store.aattach(key)
        reader = store.areader(key)
        try:
            while not core.stopping:
                batch = await reader.aread(after, _READ_SLICE, _READ_CHUNK)
                after = self._deliver(core, batch, after, emit)
                if batch.outcome is not None:
                    return self._ending(core, batch.outcome)
                # A sink has no "drained" signal to await: back off as the sync twin does.
                while core.sink.statistics().buffered >= _MAX_UNREAD and not core.stopping:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
            return None
        finally:
            reader.close()
            self._left(key, await self._detach_quietly(store.adetach(key)))

    @staticmethod
    def _deliver(core: _Core[Any], batch: Batch, after: str | None, emit: Callable[[Any], None]) -> str | None:
        stats = core.stats
        for event in batch.events:
            _feed(stats, event)
            emit(event)
        return batch.events[-1].id if batch.events else after

    @staticmethod
    def _ending(core: _Core[Any], outcome: Outcome) -> Any:
        """End the subscription as the run ended."""
        status = outcome.status
        if status == "completed":
            return outcome.output
        if status == "interrupted":
            core.interrupted = True
            return outcome.output
        if status == "cancelled":
            core._settle("cancelled", None)
            return None
        assert outcome.error is not None
        raise outcome.error

    def _detached(self, key: str) -> None:
        try:
            left = self._store.detach(key)
        except Exception:  # the store is unreachable: the subscription's own error says so
            return
        self._left(key, left)

    @staticmethod
    async def _detach_quietly(detach: Any) -> int | None:
        try:
            left: int = await detach
        except Exception:
            return None
        return left

    def _left(self, key: str, left: int | None) -> None:
        if left == 0 and self._linger is not None and key in self._local:
            self._schedule_linger(key, self._linger)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class MemoryRelay(Relay):
    """A relay in this process's memory: the embedded default, no server needed.

    ```python
    relay = callstream.MemoryRelay()
    key = relay.publish(callstream.iter_callbacks(agent, inputs))
    with relay.subscribe(key) as sub:          # any thread, any number of times
        for event in sub:
            last = event.id                    # a reconnect resumes with after=last
    ```

    It serves one process: under several worker processes (gunicorn
    `--workers 4`), or after a restart, a key published elsewhere is unknown
    here — use `callstream.redis.RedisRelay` there.

    Args:
        maxlen: the most events kept per run; older ones are dropped, and a
            subscriber asking for them gets `StreamGap`.
        ttl: seconds a finished run stays readable; then its key is unknown.
        linger: None (default): a run goes on when its subscribers leave (a
            reconnect resumes it); `s`: a run cancelled once it has had no
            subscriber for `s` seconds (counted from its start).
        max_runs: the most runs kept (queued, running and retained); one
            more raises `RelayFull`.
        queue_timeout: seconds a reserved key waits for its run before it
            ends "lost".
    """

    def __init__(
        self,
        *,
        maxlen: int = 10_000,
        ttl: float = 3600,
        linger: float | None = None,
        max_runs: int = 10_000,
        queue_timeout: float = 300,
    ) -> None:
        self._memory = MemoryStore(
            maxlen=_check_count("maxlen", maxlen),
            ttl=_check_seconds("ttl", ttl),
            max_runs=_check_count("max_runs", max_runs),
            queue_timeout=_check_seconds("queue_timeout", queue_timeout),
        )
        super().__init__(self._memory, linger=linger)

    def __repr__(self) -> str:
        counts = self._memory.counts()
        runs = sum(counts.values())
        detail = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        m = self._memory
        return (
            f"<MemoryRelay runs: {runs}{f' ({detail})' if detail else ''}, maxlen={m.maxlen}, "
            f"ttl={m.ttl:g}, linger={self._linger}, max_runs={m.max_runs}>"
        )
