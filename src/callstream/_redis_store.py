"""`RedisStore`: a relay's runs and events in Redis, shared by every process that reaches it.

Keys of one run (`key` is the run's key, `P` the prefix; the braces make them
one Redis Cluster hash slot):

```
P:{key}:run     hash     status, attempt, seq (the last event's position), lease token, cancel flag,
                         subscriber count and last read, the outcome (JSON), the ProducerLost outcomes
P:{key}:events  stream   one entry per event: id "<seq>-0", field e = the event as JSON;
                         an attempt's end: id "<seq>-1", field o = its outcome as JSON
P:{key}:lease   string   the producer's lease token; it renews it (PX) while the run goes on
P:{key}:cancel  list     a cancel request (RPUSH) wakes the producer's BLPOP at once
P:runs          zset     every run kept, scored by when its keys expire (for max_runs)
```

and one Pub/Sub channel per run, named as its stream: each script that writes
to the stream publishes what it wrote there (`e <first position>` then each
event's JSON, or `o <position>` then the outcome's, one a line), for the loops'
hubs that follow the run. Nothing is kept for it.

Every key has a TTL: `ttl` after the run ended, `ttl + lease` after the last
renewal while it runs, `queue_timeout + ttl` while it is queued. Each write
is one Lua script, so each rule is atomic; positions are assigned by Redis
(`seq`), continue across attempts, and a producer whose lease was taken over
writes nothing (its token no longer matches).

Round trips, sync face: a producer's batch of events is one `EVALSHA`; a
subscriber's read is one pipeline (`EVALSHA` inspecting the run, then `XREAD
BLOCK`); each producer's watcher thread renews its lease and waits for a cancel
request (`BLPOP`) in one pipeline per `lease / 5`.

Async face, per event loop: every call (a run's set-up and end, the appends,
a subscriber's attach, checks and detach) that comes while the round trips are
on their way goes with the others in the next one (`_Calls`, two round trips
on their way at most): a thousand runs cost a few round trips per batch, not
one each (`benchmarks/relay_redis.py`); under steady traffic a round trip
starts at most every `calls_round` (2 ms), so a call waits at most that long
to go with others. A caught-up subscriber waits in the loop's hub (`_Hub`),
whose one connection is subscribed to the channels of the runs the loop
follows: an event comes to it in the push of the script that wrote it, with no
read of its own (the run's stream is read when a subscriber joins, and on a
gap; the run's script still inspects the run at the first read, every 2 s or
so, and after a read slice with nothing). One watcher renews every producer's
lease in one pipeline and waits on all their cancel lists with one `BLPOP`
(`_Watches`). The calls, the hub and the watcher hold a connection or two
each, so a loop's thousand runs use a few connections, not two thousand.
These paths pack their commands with hiredis when it is installed (the
`redis` extra), as redis-py's async client does not, and read each round
trip's replies under one socket timeout, not one timer per reply.

A run nobody records ends on the next look (any read or `status`): a
reserved key past `queue_timeout`, or a running one whose lease key expired
(its producer died), ends "lost", and its end entry wakes every reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import secrets
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from time import monotonic, sleep
from typing import Any, Final

from ._relay_store import Batch, Face, Outcome, RelayStatus, event_position
from ._wire import dump_event, dump_outcome, error_text, load_event, load_outcome
from .errors import ProducerLost, RelayFull, StreamGap, StreamNotFound, short_key
from .events import Event

__all__ = ("RedisStore",)

#: The most events one script appends.
_APPEND_MAX: Final = 1000
#: A subscriber not heard from for this long no longer counts as watching (for `linger`).
_STALE_MS: Final = 5000

_LUA_COMMON = """
-- a write to a run's stream, pushed to the loops' hubs that follow it (its channel: the stream's name):
-- "e <first position>" then each event's JSON, or "o <position>" then the outcome's, one a line
-- (pcall: a user whose ACL grants no channels still writes; its subscribers read the stream instead)
local function publish(header, body)
  redis.pcall('PUBLISH', KEYS[2], header .. '\\n' .. body)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function expire_all(ms)
  redis.call('PEXPIRE', KEYS[1], ms)
  redis.call('PEXPIRE', KEYS[2], ms)
  redis.call('PEXPIRE', KEYS[4], ms)
  redis.call('ZADD', KEYS[5], now_ms() + ms, ARGV[1])
  if redis.call('PTTL', KEYS[5]) < ms then redis.call('PEXPIRE', KEYS[5], ms) end
end
local function conclude(status, outcome, errtext)
  local seq = redis.call('HGET', KEYS[1], 'seq')
  redis.call('XADD', KEYS[2], seq .. '-1', 'o', outcome)
  redis.call('HSET', KEYS[1], 'status', status, 'outcome', outcome, 'error', errtext, 'ended', now_ms())
  redis.call('HDEL', KEYS[1], 'token')
  redis.call('DEL', KEYS[3])
  redis.call('RPUSH', KEYS[4], 'end')
  expire_all(tonumber(ARGV[2]))
  publish('o ' .. seq, outcome)
end
local function settle()
  local h = redis.call('HMGET', KEYS[1], 'status', 'deadline')
  local status = h[1]
  if not status then return false end
  if status == 'queued' and now_ms() >= tonumber(h[2]) then
    local lost = redis.call('HMGET', KEYS[1], 'lostq', 'lostq_error')
    conclude('lost', lost[1], lost[2])
    return 'lost'
  end
  if status == 'running' and redis.call('EXISTS', KEYS[3]) == 0 then
    local lost = redis.call('HMGET', KEYS[1], 'lostp', 'lostp_error')
    conclude('lost', lost[1], lost[2])
    return 'lost'
  end
  return status
end
"""

# ARGV: key, ttl_ms, queued, max_runs, queue_ms, lease_ms, token, maxlen, lostq, lostq_error, lostp, lostp_error
_BEGIN = """
local ttl, lease, token = tonumber(ARGV[2]), tonumber(ARGV[6]), ARGV[7]
local status = settle()
local function run_now(attempt)
  redis.call('HSET', KEYS[1], 'status', 'running', 'attempt', attempt, 'token', token, 'cancel', '0')
  redis.call('HDEL', KEYS[1], 'outcome', 'error', 'ended')
  if tonumber(redis.call('HGET', KEYS[1], 'subs')) <= 0 then redis.call('HSET', KEYS[1], 'idle', now_ms()) end
  redis.call('DEL', KEYS[4])
  redis.call('SET', KEYS[3], token, 'PX', lease)
  expire_all(ttl + lease)
end
if not status then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now_ms())
  if redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[4]) then return {'full'} end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'seq', 0, 'attempt', 0, 'created', now_ms(), 'subs', 0, 'seen', 0, 'idle', now_ms(),
    'lostq', ARGV[9], 'lostq_error', ARGV[10], 'lostp', ARGV[11], 'lostp_error', ARGV[12])
  if ARGV[3] == '1' then
    redis.call('HSET', KEYS[1], 'status', 'queued', 'deadline', now_ms() + tonumber(ARGV[5]))
    expire_all(tonumber(ARGV[5]) + ttl)
    return {'ok', 0}
  end
  run_now(1)
  return {'ok', 1}
end
if ARGV[3] == '1' then return {'taken', status} end
if status == 'queued' then
  run_now(1)
  return {'ok', 1}
end
local h = redis.call('HMGET', KEYS[1], 'attempt', 'seq', 'error')
local attempt, seq = tonumber(h[1]), tonumber(h[2])
if status == 'cancelled' and attempt == 0 then return {'ok', 0} end
if status == 'error' or status == 'lost' then
  local previous = {status = status, error = cjson.null}
  if h[3] and h[3] ~= '' then previous['error'] = h[3] end
  redis.call('XDEL', KEYS[2], seq .. '-1')
  local event = cjson.encode({k = 'attempt', d = {attempt = attempt + 1, previous = previous}})
  redis.call('XADD', KEYS[2], (seq + 1) .. '-0', 'e', event)
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[8], 'LIMIT', 0)
  redis.call('HSET', KEYS[1], 'seq', seq + 1)
  publish('e ' .. (seq + 1), event)
  run_now(attempt + 1)
  return {'ok', attempt + 1}
end
return {'taken', status}
"""

# The hot path, so the shortest call: KEYS: run, events (not the five of the others);
# ARGV: token, maxlen, event...
_APPEND = """
local h = redis.call('HMGET', KEYS[1], 'status', 'token', 'seq')
if not h[1] then return -1 end
if h[1] ~= 'running' or h[2] ~= ARGV[1] then return -2 end
local first = tonumber(h[3]) + 1
local seq = first
-- the stream exists (its TTL set when it was made, renewed with the run's), or it is made now
if not redis.call('XADD', KEYS[2], 'NOMKSTREAM', seq .. '-0', 'e', ARGV[3]) then
  redis.call('XADD', KEYS[2], seq .. '-0', 'e', ARGV[3])
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then redis.call('PEXPIRE', KEYS[2], left) end
end
for i = 4, #ARGV do
  seq = seq + 1
  redis.call('XADD', KEYS[2], seq .. '-0', 'e', ARGV[i])
end
redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[2], 'LIMIT', 0)
redis.call('HSET', KEYS[1], 'seq', seq)
publish('e ' .. first, table.concat(ARGV, '\\n', 3))
return seq
"""

# ARGV: key, ttl_ms, token, status, outcome, error text
_FINISH = """
local h = redis.call('HMGET', KEYS[1], 'status', 'token')
if not h[1] then return -1 end
if h[1] ~= 'running' or h[2] ~= ARGV[3] then return 0 end
conclude(ARGV[4], ARGV[5], ARGV[6])
return 1
"""

# ARGV: key, ttl_ms, token, lease_ms
_RENEW = """
local h = redis.call('HMGET', KEYS[1], 'status', 'token', 'cancel')
if h[1] ~= 'running' or h[2] ~= ARGV[3] then return -1 end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
expire_all(tonumber(ARGV[2]) + tonumber(ARGV[4]))
if h[3] == '1' then return 1 end
return 0
"""

# ARGV: key, ttl_ms, seen (1: a subscriber reads)
_INSPECT = """
local status = settle()
if not status then return false end
local h = redis.call('HMGET', KEYS[1], 'seq', 'cancel', 'seen')
if ARGV[3] == '1' then  -- a subscriber reads: it watches (written once a second at most)
  local now = now_ms()
  if now - tonumber(h[3] or 0) >= 1000 then redis.call('HSET', KEYS[1], 'seen', now) end
end
return {status, h[1], h[2]}
"""

# ARGV: key, ttl_ms
_CANCEL = """
local status = settle()
if not status then return false end
if status == 'queued' then
  conclude('cancelled', '{"status":"cancelled"}', '')
  return 'cancelled'
end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  redis.call('RPUSH', KEYS[4], 'cancel')
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then redis.call('PEXPIRE', KEYS[4], left) end
end
return status
"""

# ARGV: key, ttl_ms, delta (+1 attach, -1 detach)
_WATCHERS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'subs', ARGV[3])
if n <= 0 then
  redis.call('HSET', KEYS[1], 'subs', 0, 'idle', now_ms())
  return 0
end
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'seen', now_ms()) end
return n
"""

# ARGV: key, ttl_ms, stale_ms; -1: watched, nil: ended or unknown, else ms idle
_IDLE = """
local h = redis.call('HMGET', KEYS[1], 'status', 'subs', 'seen', 'idle')
if h[1] ~= 'running' and h[1] ~= 'queued' then return false end
local now = now_ms()
local seen = tonumber(h[3])
if tonumber(h[2]) > 0 and now - seen < tonumber(ARGV[3]) then return -1 end
return now - math.max(seen, tonumber(h[4]))
"""

_SCRIPTS: Final = {
    "begin": _BEGIN,
    "append": _APPEND,
    "finish": _FINISH,
    "renew": _RENEW,
    "inspect": _INSPECT,
    "cancel": _CANCEL,
    "watchers": _WATCHERS,
    "idle": _IDLE,
}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(response: Any) -> list[tuple[Any, Any]]:
    """The entries of an `XREAD` on one stream, whatever shape the client parsed it to.

    RESP2: `[[stream, [(id, fields), ...]]]`; RESP3: `{stream: [(id, fields), ...]}` or
    `{stream: [[(id, fields), ...]]}`; `fields` a dict or a flat list.
    """
    if not response:
        return []
    value = next(iter(response.values())) if isinstance(response, dict) else response[0][1]
    if value and isinstance(value[0], list) and value[0] and isinstance(value[0][0], (list, tuple)):
        value = value[0]
    return list(value or ())


def _eid(entry_id: Any) -> tuple[int, int]:
    """A stream entry id `"<ms>-<seq>"` as numbers."""
    ms, _, sub = _text(entry_id).partition("-")
    return int(ms), int(sub or 0)


def _streams(response: Any) -> list[tuple[Any, list[Any]]]:
    """The `(stream, entries)` of an `XREAD` on several streams, raw RESP2 or RESP3."""
    if not response:
        return []
    pairs = list(response.items()) if isinstance(response, dict) else [(item[0], item[1]) for item in response]
    out = []
    for stream, value in pairs:
        if value and isinstance(value[0], list) and value[0] and isinstance(value[0][0], (list, tuple)):
            value = value[0]
        out.append((stream, list(value or ())))
    return out


def _entry(entry_id: Any, fields: Any) -> tuple[int, int, Any]:
    """A stream entry as `(n, sub, value)`: an event's JSON (sub 0), or an attempt's outcome's (sub 1)."""
    n, sub = _eid(entry_id)
    return n, sub, _field(fields, "o" if sub else "e")


def _field(fields: Any, name: str) -> Any:
    if isinstance(fields, dict):
        got = fields.get(name.encode())
        return fields.get(name) if got is None else got
    items = list(fields)
    for i in range(0, len(items) - 1, 2):
        if _text(items[i]) == name:
            return items[i + 1]
    return None


class _Watch:
    """While a run is pumped here: renew its lease, and stop it on a cancel request from anywhere."""

    def __init__(self, store: RedisStore, key: str, token: str, stop: Callable[[], None]) -> None:
        self.store = store
        self.key = key
        self.token = token
        self.stop = stop
        self.done = False
        self.cancelled_at: float | None = None
        #: when its lease was last renewed (the async face's shared watcher)
        self.last = monotonic()

    def step(self, renewed: Any, popped: Any) -> bool:
        """Act on one renewal and one wait; return False when the watch is over."""
        if self.done:
            return False
        state = int(renewed)
        signal = _text(popped[1]) if popped else ""
        if state == -1 or signal == "end":  # the run ended, was declared lost, or another attempt took it
            self.stop()
            return False
        if state == 1 or signal == "cancel":
            if self.cancelled_at is None:
                self.cancelled_at = monotonic()
            self.stop()
        return True

    def run(self) -> None:
        store = self.store
        assert store.sync is not None
        last = monotonic()
        while not self.done:
            try:
                renewed, popped = store.call(store.renew_ops(self.key, self.token))
            except Exception:
                if self.done:
                    return
                if monotonic() - last > store.lease:  # it cannot prove it is alive: subscribers see it lost
                    self.stop()
                    return
                sleep(min(store.renew_every, 0.1))
                continue
            last = monotonic()
            if not self.step(renewed, popped):
                return


#: The most entries a follower keeps fetched and unread: past it, the hub stops reading its run.
_FOLLOW_MAX: Final = 2048
#: The most entries the hub takes from one run's stream per `XREAD`.
_HUB_COUNT: Final = 256
#: A subscriber that follows a run through the hub inspects it (status, lost producer, watching:
#: within half of `_STALE_MS`) about this often, and whenever the hub had nothing for it during
#: a read slice (a producer that stopped: lost within its lease).
_CHECK_EVERY: Final = 2.0
#: how late a hub may end a follower's wait (its sweeps batch the waits' deadlines)
_SWEEP_SLACK: Final = 0.01
#: how often a hub whose subscriptions Redis refused reads its followed streams
_POLL_EVERY: Final = 0.05

_logger = logging.getLogger("callstream")


def _pack_python(ops: list[tuple[Any, ...]] | list[list[Any]]) -> bytes:
    """Commands in the Redis protocol (RESP): what redis-py's async client does, in fewer steps.

    The arguments the store sends are `str`, `bytes` and `int` only.
    """
    out: list[bytes] = []
    append = out.append
    for op in ops:
        append(b"*%d\r\n" % len(op))
        for arg in op:
            t = type(arg)
            data = arg.encode() if t is str else arg if t is bytes else str(arg).encode()
            append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def _packer() -> Callable[[list[tuple[Any, ...]] | list[list[Any]]], bytes]:
    """hiredis' packer when it is installed (redis-py's async client never uses it), else `_pack_python`."""
    try:
        # hiredis is optional (the `redis` extra installs it): a venv without it type-checks too
        from hiredis import pack_command  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - the tests install hiredis (the `redis` extra)
        return _pack_python

    def pack(ops: list[tuple[Any, ...]] | list[list[Any]]) -> bytes:
        return b"".join([pack_command(tuple(op)) for op in ops])

    return pack


#: `ops` as the bytes of one write: the hot paths (the writes, the hub, the watcher) pack with it
_pack: Final = _packer()


async def _send(connection: Any, data: bytes) -> None:
    """`connection.send_packed_command(data)`, without its `asyncio.wait_for` per write (a task
    each on Python 3.11) when the connection is up: the bytes go to the socket at once, and only
    a write the socket could not take is waited for (within the connection's socket timeout)."""
    writer = getattr(connection, "_writer", None)
    if writer is None or not connection.is_connected:  # (re)connects, as redis-py does
        await connection.send_packed_command(data)
        return
    try:
        writer.write(data)
        if writer.transport.get_write_buffer_size():
            async with asyncio.timeout(connection.socket_timeout or None):
                await writer.drain()
    except (OSError, TimeoutError) as exc:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        await connection.disconnect(nowait=True)
        if isinstance(exc, TimeoutError):  # as redis-py says it
            raise RedisTimeoutError("Timeout writing to socket") from exc
        raise RedisConnectionError(f"Error while writing to Redis: {exc!r}") from exc
    except BaseException:
        # A cancel mid-write leaves part of a command on the socket: the connection
        # must never carry another (redis-py's send_packed_command does the same).
        await connection.disconnect(nowait=True)
        raise


@contextlib.asynccontextmanager
async def _reading(connection: Any) -> AsyncIterator[None]:
    """One socket timeout for the replies read in the block (`_read`), not a timer per reply
    (redis-py's `read_response` sets one each); redis-py's `TimeoutError` when it expires."""
    try:
        async with asyncio.timeout(connection.socket_timeout or None):
            yield
    except TimeoutError as exc:
        from redis.exceptions import TimeoutError as RedisTimeoutError

        await connection.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout reading from Redis") from exc


async def _read(connection: Any) -> Any:
    """One reply, inside `_reading` (`math.inf`: no timer of its own, on redis-py 8.1+)."""
    return await connection.read_response(timeout=math.inf)


async def _replies(connection: Any) -> AsyncGenerator[Any, None]:
    """The replies and pushes a connection receives, as they come: with hiredis, every one
    already received is taken at once (`read_response` is a coroutine and a timer each)."""
    parser = connection._parser
    reader = getattr(parser, "_reader", None)
    if reader is None:  # pragma: no cover - the tests install hiredis (the `redis` extra)
        while True:
            async with _reading(connection):
                yield await connection.read_response(timeout=math.inf, push_request=True)
    from redis._parsers.hiredis import NOT_ENOUGH_DATA

    gets = reader.gets
    while True:
        reply = gets()
        if reply is NOT_ENOUGH_DATA:
            async with _reading(connection):
                await parser.read_from_socket()
            continue
        if isinstance(reply, Exception):  # what redis-py raises (a connection or a reply error)
            raise reply
        yield reply


async def _round_trip(store: RedisStore, connection: Any, ops: list[tuple[Any, ...]]) -> list[Any]:
    """`ops` pipelined on a connection held by the caller: their replies, a Redis error in place of
    its op's reply. Ops whose script Redis lost (a restart, `SCRIPT FLUSH`) are sent again, alone,
    once the scripts are loaded: an op is never run twice."""
    from redis.exceptions import NoScriptError, ResponseError

    replies: list[Any] = [None] * len(ops)
    todo = list(range(len(ops)))
    for attempt in (0, 1):
        await _send(connection, _pack([ops[i] for i in todo]))
        missing: list[int] = []
        async with _reading(connection):
            for i in todo:
                try:
                    replies[i] = await _read(connection)
                except ResponseError as exc:  # read the other replies: the connection stays in step
                    replies[i] = exc
                    if isinstance(exc, NoScriptError):
                        missing.append(i)
        if not missing or attempt:
            break
        loads = [("SCRIPT", "LOAD", _LUA_COMMON + source) for source in _SCRIPTS.values()]
        await connection.send_packed_command(_pack(loads))
        for _ in loads:
            await connection.read_response()
        todo = missing
    return replies


async def _pipelined(store: RedisStore, connection: Any, ops: list[tuple[Any, ...]]) -> list[Any]:
    """`_round_trip`, its first Redis error raised (after every reply was read)."""
    replies = await _round_trip(store, connection, ops)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Follower:
    """One async subscription that the hub reads for: the entries fetched after its position."""

    __slots__ = ("behind", "cursor", "deadline", "entries", "error", "stream", "waiter")

    def __init__(self, stream: str, cursor: tuple[int, int]) -> None:
        self.stream = stream
        #: the last entry fetched (or the subscriber's position): the hub reads after it
        self.cursor = cursor
        #: fetched and not yet read: `(n, sub, value)` in order (`RedisStore.batch`)
        self.entries: list[tuple[int, int, Any]] = []
        self.waiter: asyncio.Future[None] | None = None
        #: while it waits: the loop's time when its wait ends with nothing (`_Hub.sweep`)
        self.deadline = 0.0
        self.error: BaseException | None = None
        #: entries were pushed that it had no room for: its stream is read when it waits again
        self.behind = False

    def wake(self) -> None:
        if self.waiter is not None:
            _wake(self.waiter)

    def take(self, fresh: list[tuple[int, int, Any]]) -> None:
        """Entries that come after its cursor, in order: kept for its reads, and it is woken."""
        self.entries.extend(fresh)
        self.cursor = (fresh[-1][0], fresh[-1][1])
        self.wake()


def _follows(cursor: tuple[int, int], n: int, sub: int) -> bool:
    """Whether the entry `(n, sub)` comes right after `cursor` in a run's stream: the next
    event, or the end of the attempt whose last event is the cursor."""
    return n == cursor[0] + 1 if sub == 0 else n == cursor[0] and cursor[1] == 0


def _pushed(data: bytes) -> list[tuple[int, int, bytes]]:
    """The entries of a message a script published (`publish` in the scripts): `(n, sub, value)`."""
    header, _, body = data.partition(b"\n")
    kind, _, position = header.partition(b" ")
    n = int(position)
    if kind == b"o":
        return [(n, 1, body)]
    return [(n + i, 0, value) for i, value in enumerate(body.split(b"\n"))]


class _Hub:
    """Every caught-up async subscriber of one event loop, served by one connection.

    Each script that writes to a run's stream (an append, an attempt's start or end) also
    publishes what it wrote on the run's channel (the stream's name), in the same script. The hub
    holds one connection subscribed to the channels of the runs its loop follows, and hands each
    message's entries to the followers it comes right after. So an event reaches a caught-up
    subscriber in the one push that Redis sends it, without a read of its own: a thousand
    subscriptions cost one connection, one `SUBSCRIBE` each, and no command per event.

    The stream stays the record: a follower is read from it (`XREAD`, in the loop's next round
    trip of calls) when it joins a run, once the run's subscription is confirmed (what came before
    it), when a message does not come right after its cursor (a gap: messages it missed, or the
    run's first read still on its way), and when it had no room for a message. So a message the
    hub never gets costs time, never an event: a connection Redis dropped (a subscriber past its
    output buffer limit) is replaced, subscribed again, and each follower read from its cursor;
    only a Redis that cannot be reached makes the followers raise the error.
    """

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.followers: dict[str, set[_Follower]] = {}
        #: reads the pushed messages (None: no connection held)
        self.task: asyncio.Task[None] | None = None
        #: the hub's connection, subscribed (None until the task holds it)
        self.connection: Any = None
        #: the channels `SUBSCRIBE`d (and not `UNSUBSCRIBE`d since)
        self.sent: set[str] = set()
        #: the channels whose subscription Redis confirmed: what is written to them now comes here
        self.live: set[str] = set()
        #: a `_flush` of the subscriptions is due this tick of the loop
        self.flushing = False
        #: streams to read from their followers' cursors (`XREAD`), and the task that reads them
        self.dirty: set[str] = set()
        self.reader: asyncio.Task[None] | None = None
        self.chores: set[asyncio.Task[Any]] = set()
        #: the timer of the next sweep (None: no follower waits)
        self.sweeper: asyncio.TimerHandle | None = None
        #: channels (un)subscribed whose confirmation Redis has not sent yet
        self.unconfirmed = 0
        #: the keepalive `PING`s' timer (with a socket timeout)
        self.keepalive: asyncio.TimerHandle | None = None

    def add(self, follower: _Follower) -> None:
        self.start()
        stream = follower.stream
        self.followers.setdefault(stream, set()).add(follower)
        if stream in self.live and stream in self.sent:  # what came before the pushes from now: read it
            self.read(stream)
        else:  # read once subscribed (again, if its UNSUBSCRIBE is on its way)
            self.subscriptions_changed()

    def remove(self, follower: _Follower) -> None:
        group = self.followers.get(follower.stream)
        if group is not None:
            group.discard(follower)
            if not group:
                del self.followers[follower.stream]
                self.subscriptions_changed()

    def start(self) -> None:
        """Hold a connection for the pushes (the task ends when no run is followed any more)."""
        if self.task is None:
            self.live.clear()
            self.sent.clear()
            self.task = asyncio.get_running_loop().create_task(self.run(), name="callstream-redis-hub")

    def resume(self, follower: _Follower) -> None:
        """The follower waits for entries after its cursor: read its stream at once if it had no
        room for pushed ones."""
        if self.task is None and follower.error is None:  # the hub went idle as it joined: again
            self.start()
            self.subscriptions_changed()
        if follower.behind:
            follower.behind = False
            self.read(follower.stream)

    def read(self, stream: str) -> None:
        """Read `stream` after its followers' cursors, in the loop's next round trip of calls."""
        self.dirty.add(stream)
        if self.reader is None:
            self.reader = asyncio.get_running_loop().create_task(self.read_dirty(), name="callstream-redis-hub-read")

    def subscriptions_changed(self) -> None:
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """(Un)subscribe the channels whose followers came or left this tick: one write for all."""
        self.flushing = False
        connection = self.connection
        if connection is None:  # the task sends them once it holds its connection
            return
        wanted = self.followers.keys()
        add = [stream for stream in wanted if stream not in self.sent]
        drop = [stream for stream in self.sent if stream not in wanted]
        ops: list[tuple[Any, ...]] = []
        if add:
            self.sent.update(add)
            ops.append(("SUBSCRIBE", *add))
        if drop:
            self.sent.difference_update(drop)
            ops.append(("UNSUBSCRIBE", *drop))
        if ops:
            self.unconfirmed += len(add) + len(drop)
            self.send(connection, ops)

    def send(self, connection: Any, ops: list[tuple[Any, ...]]) -> None:
        """Write on the hub's connection beside its task's reads (a failed write: the reads fail too)."""
        task = asyncio.get_running_loop().create_task(_send(connection, _pack(ops)))
        self.chores.add(task)
        task.add_done_callback(self._chore_done)

    def _chore_done(self, task: asyncio.Task[Any]) -> None:
        self.chores.discard(task)
        if not task.cancelled():
            task.exception()  # the hub's reads fail too, and say why

    def sweep_soon(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """A follower waits until `deadline` (the loop's time): a sweep ends its wait then, at
        most `_SWEEP_SLACK` late (one timer for all the waits, not one each: a timer made and
        cancelled per event costs the loop dearly)."""
        sweeper = self.sweeper
        if sweeper is None or deadline + _SWEEP_SLACK < sweeper.when():
            if sweeper is not None:
                sweeper.cancel()
            self.sweeper = loop.call_at(max(deadline, loop.time() + _SWEEP_SLACK), self.sweep, loop)

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake the followers whose wait is over; again at the next deadline if others still wait."""
        self.sweeper = None
        now = loop.time()
        nearest = math.inf
        for group in self.followers.values():
            for follower in group:
                if follower.waiter is not None:
                    if now >= follower.deadline:
                        follower.wake()
                    else:
                        nearest = min(nearest, follower.deadline)
        if nearest < math.inf:
            self.sweep_soon(loop, nearest)

    def pushed(self, channel: Any, data: Any) -> None:
        """A message a script published: its entries, to each follower they come right after."""
        stream = _text(channel)
        group = self.followers.get(stream)
        if not group:
            return
        try:
            entries = _pushed(data if type(data) is bytes else str(data).encode())
        except ValueError:  # not a script's: the stream says what was written
            self.read(stream)
            return
        first, last = entries[0], entries[-1]
        for follower in group:
            cursor = follower.cursor
            if (last[0], last[1]) <= cursor:  # it has them (read from the stream meanwhile)
                continue
            if (first[0], first[1]) <= cursor:
                fresh = [e for e in entries if (e[0], e[1]) > cursor]
            else:
                fresh = entries
            if not _follows(cursor, fresh[0][0], fresh[0][1]):  # it missed some: read them
                self.read(follower.stream)
            elif len(follower.entries) >= _FOLLOW_MAX:  # no room: read when it waits again
                follower.behind = True
            else:
                follower.take(fresh)

    def confirmed(self, kind: bytes, channel: str) -> None:
        self.unconfirmed -= 1
        if kind == b"subscribe":
            if channel in self.sent:  # what was written before: read it
                self.live.add(channel)
                self.read(channel)
        else:
            self.live.discard(channel)

    async def read_dirty(self) -> None:
        """Read the streams to read, after the cursors of their followers that have room."""
        try:
            while self.dirty:
                names: list[str] = []
                ids: list[str] = []
                reading: set[_Follower] = set()
                for stream in self.dirty:
                    cursor = None
                    for follower in self.followers.get(stream, ()):
                        if len(follower.entries) < _FOLLOW_MAX:
                            reading.add(follower)
                            cursor = follower.cursor if cursor is None or follower.cursor < cursor else cursor
                        else:  # no room: its stream is read when it waits again
                            follower.behind = True
                    if cursor is not None:
                        names.append(stream)
                        ids.append(f"{cursor[0]}-{cursor[1]}")
                self.dirty = set()
                if not names:
                    break
                try:
                    reply = (await self.store.acall([("XREAD", "COUNT", _HUB_COUNT, "STREAMS", *names, *ids)]))[0]
                except Exception as exc:  # the subscribers raise it, as a read of their own would
                    for follower in reading:
                        follower.error = exc
                        follower.wake()
                    continue
                self.deliver(reply, reading)
        finally:
            self.reader = None

    def deliver(self, reply: Any, reading: set[_Follower]) -> None:
        """The entries of the streams read, to the followers they were read for."""
        for stream, entries in _streams(reply):
            name = _text(stream)
            group = self.followers.get(name)
            if not group or not entries:
                continue
            if len(entries) >= _HUB_COUNT:  # more may follow: read it again
                self.dirty.add(name)
            parsed = [_entry(entry_id, fields) for entry_id, fields in entries]
            for follower in group:
                if follower not in reading:  # it joined since: its own read comes
                    continue
                cursor = follower.cursor
                fresh = [e for e in parsed if (e[0], e[1]) > cursor]
                if fresh:
                    follower.take(fresh)

    async def run(self) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        pool = self.store.apool()
        connection: Any = None
        loop = asyncio.get_running_loop()
        short = 0  # connections in a row dropped within 2 s of their start
        try:
            while True:
                connection = await pool.get_connection()
                self.connection = connection
                started = loop.time()
                try:
                    await self.serve(connection)
                    break
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    # Dropped (Redis' output buffer limit for a subscriber that fell behind, a proxy's
                    # idle timeout): a new connection subscribes again and each follower's stream is
                    # read from its cursor. Redis itself down: the next connect
                    # fails; dropped again and again soon after its start: the followers get the error.
                    short = short + 1 if loop.time() - started < 2.0 else 0
                    if short >= 5:
                        raise
                    self.connection = None
                    await connection.disconnect()
                    await pool.release(connection)
                    connection = None
                    if short:  # a little later each time it is dropped soon after its start
                        await asyncio.sleep(min(0.05 * 2 ** (short - 1), 1.0))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the subscribers raise it, as a read of their own would
            for group in self.followers.values():
                for follower in group:
                    follower.error = exc
                    follower.wake()
        finally:
            self.connection = None
            self.live.clear()
            self.sent.clear()
            if self.task is asyncio.current_task():
                self.task = None
            if connection is not None:  # never back to the pool subscribed, nor with a PONG due
                await connection.disconnect()
                await pool.release(connection)

    async def serve(self, connection: Any) -> None:
        """Subscribe the followed runs on `connection` and hand on what it receives, until no run
        is followed (or Redis refuses the subscriptions: then `poll`)."""
        from redis.exceptions import ResponseError

        loop = asyncio.get_running_loop()
        self.live.clear()
        self.sent.clear()
        self.unconfirmed = 0
        self.flush()
        if connection.socket_timeout:  # something to read within the socket timeout, while all is quiet
            self.keepalive = loop.call_later(self.store.hub_ping_every, self.ping, loop)
        replies = _replies(connection)
        try:
            while self.followers or self.sent or self.unconfirmed:  # else: nobody follows a run here
                try:
                    reply = await anext(replies)
                except ResponseError as exc:  # refused: the user's ACL grants no channels
                    await self.poll(exc)
                    return
                if not isinstance(reply, list):
                    continue  # a PONG (RESP3)
                kind = reply[0] if type(reply[0]) is bytes else _text(reply[0]).encode()
                if kind == b"message":
                    self.pushed(reply[1], reply[2])
                elif kind in (b"subscribe", b"unsubscribe"):
                    self.confirmed(kind, _text(reply[1]))
        finally:  # (`replies` holds nothing to release: no await between the last reply and the end)
            if self.keepalive is not None:
                self.keepalive.cancel()
                self.keepalive = None

    def ping(self, loop: asyncio.AbstractEventLoop) -> None:
        """Something for the reads to receive every `hub_ping_every` (half the socket timeout), pushes or not."""
        connection = self.connection
        if connection is None:
            return
        self.send(connection, [("PING",)])
        self.keepalive = loop.call_later(self.store.hub_ping_every, self.ping, loop)

    async def poll(self, error: Exception) -> None:
        """Redis refused the subscriptions (an ACL user without the channels): read every
        followed stream each `_POLL_EVERY` instead, while this hub has followers."""
        if not self.store.warned_poll:
            self.store.warned_poll = True
            _logger.warning(
                "callstream: Redis refused the relay's subscriptions (%s); subscribers read their runs every "
                "%g s instead: grant the user the channels of its prefix (ACL '&%s:*')",
                error,
                _POLL_EVERY,
                self.store.prefix,
            )
        self.connection = None  # nothing more is sent on it
        while self.followers:
            for stream in self.followers:
                self.read(stream)
            await asyncio.sleep(_POLL_EVERY)


class _HubReader:
    """An async subscription's reads: the run's script when it must be looked at, else the hub."""

    __slots__ = ("check_at", "follower", "hub", "key", "status", "store")

    def __init__(self, store: RedisStore, key: str) -> None:
        self.store = store
        self.key = key
        self.hub: _Hub | None = None
        self.follower: _Follower | None = None
        self.check_at = 0.0
        self.status: RelayStatus = "running"

    async def aread(self, after: str | None, wait: float, limit: int) -> Batch:
        store = self.store
        if self.follower is not None and self.follower.error is not None:
            raise self.follower.error
        if monotonic() >= self.check_at or wait <= 0:
            # The script: the run's status (a lost producer ends it here), StreamGap for an
            # `after` never issued, StreamNotFound, and this subscriber's "seen" mark.
            batch = await store.aread(self.key, after, 0, limit)
            # Spread over time (runs started together would check together, a burst each period)
            self.check_at = monotonic() + _CHECK_EVERY * (0.75 + 0.5 * random.random())
            self.status = batch.status
            if batch.events or batch.outcome is not None or wait <= 0:
                return batch
        position = store._position(self.key, after)
        cursor = (position, 0)
        follower = self.follower
        if follower is None:
            self.hub = store.hub()
            follower = self.follower = _Follower(store.keys(self.key)[1], cursor)
            self.hub.add(follower)
        else:
            if follower.entries and (follower.entries[0][0], follower.entries[0][1]) <= cursor:
                follower.entries = [e for e in follower.entries if (e[0], e[1]) > cursor]
            if follower.cursor < cursor:
                follower.cursor = cursor
        if not follower.entries:
            assert self.hub is not None
            loop = asyncio.get_running_loop()
            follower.waiter = waiter = loop.create_future()
            follower.deadline = loop.time() + min(wait, store.read_slice)
            self.hub.resume(follower)
            self.hub.sweep_soon(loop, follower.deadline)
            try:
                await waiter
            finally:
                follower.waiter = None
            if follower.error is not None:
                raise follower.error
            if not follower.entries:  # nothing for a read slice: look at the run at the next read
                self.check_at = 0.0
                return Batch([], None, self.status)
        if self.status == "queued":
            self.status = "running"
        return store.batch(self.key, after, position, limit, follower.entries, self.status)

    def close(self) -> None:
        if self.hub is not None and self.follower is not None:
            self.hub.remove(self.follower)
            self.follower.wake()
        self.follower = None


#: round trips of a loop's calls that may be on their way at once (`_Calls`), each on its own connection
_LANES: Final = 2


class _Calls:
    """A loop's round trips to Redis, coalesced: the first call goes at once, the calls made while
    the round trips are on their way go together in the next one (no wait is added to a lone call).

    So a thousand runs' set-up (reserve, begin, attach, the first read), their appends, their
    subscribers' checks and their ends cost a few round trips a batch, not one each. Up to
    `_LANES` round trips are on their way at once, each on a connection of its own: a call waits
    for the next round trip to start (at most `calls_round` after the last one started), not for
    the one on its way to come back. Each caller awaits its call, so a run's own writes (its
    begin, appends and end) go one after the other, whichever lane takes them. A caller's error
    (its script's, or Redis') is its own; a connection error fails the batch it was in. The round
    trips are tasks of their own: a caller that is cancelled leaves the others' be.
    """

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.queue: list[tuple[list[tuple[Any, ...]], asyncio.Future[list[Any]]]] = []
        #: the lanes' tasks, and how many of them wait to take the queue (none on its way)
        self.lanes: set[asyncio.Task[None]] = set()
        self.ready = 0
        #: when the last round trip started (the loop's time)
        self.started = -math.inf

    async def call(self, ops: list[tuple[Any, ...]]) -> list[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        self.queue.append((ops, fut))
        if not self.ready and len(self.lanes) < _LANES:
            self.ready += 1
            lane = loop.create_task(self.run(), name="callstream-redis-calls")
            self.lanes.add(lane)
        return await fut

    async def run(self) -> None:
        store = self.store
        pool = store.apool()
        # Held while calls go on: they never wait behind the pool's queue.
        connection: Any = None
        loop = asyncio.get_running_loop()
        try:
            while self.queue:
                # Calls made right after a round trip began wait for the next one a little
                # (`calls_round`): more calls per round trip; a lone call goes at once.
                pause = self.started + store.calls_round - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                    if not self.queue:  # another lane took them
                        break
                self.started = loop.time()
                batch, self.queue = self.queue, []
                self.ready -= 1
                try:
                    if connection is None:
                        connection = await pool.get_connection()  # connected and checked
                    replies = await _round_trip(store, connection, [op for part, _ in batch for op in part])
                except BaseException as exc:
                    if connection is not None:  # it may be out of step: dropped
                        await connection.disconnect()
                        await pool.release(connection)
                        connection = None
                    for _, fut in batch:
                        if fut.done():
                            pass
                        elif isinstance(exc, Exception):
                            fut.set_exception(exc)
                        else:  # the loop ends
                            fut.cancel()
                    if not isinstance(exc, Exception):
                        raise
                    continue
                finally:
                    self.ready += 1
                i = 0
                for part, fut in batch:
                    got = replies[i : i + len(part)]
                    i += len(part)
                    if fut.done():  # its caller was cancelled
                        continue
                    error = next((r for r in got if isinstance(r, Exception)), None)
                    if error is not None:
                        fut.set_exception(error)
                    else:
                        fut.set_result(got)
        finally:
            self.ready -= 1
            task = asyncio.current_task()
            self.lanes.discard(task)
            if not self.lanes:
                for _, fut in self.queue:  # the loop ends: nothing more goes
                    if not fut.done():
                        fut.cancel()
                self.queue = []
            if connection is not None:
                await pool.release(connection)


class _Watches:
    """A loop's producers: their leases renewed together (one pipeline a `lease / 5`), and one
    `BLPOP` on all their cancel lists, which a cancel from any process wakes at once."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.watches: dict[str, _Watch] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, watch: _Watch) -> None:
        self.watches[watch.key] = watch
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run(), name="callstream-redis-leases")

    def remove(self, watch: _Watch) -> None:
        watch.done = True
        if self.watches.get(watch.key) is watch:
            del self.watches[watch.key]

    async def run(self) -> None:
        store = self.store
        pool = store.apool()
        # A connection of its own: a renewal never waits behind the pool's queue (a busy loop's
        # thousands of reads), only for the loop itself.
        connection: Any = None
        renewed_at = -store.renew_every
        try:
            while self.watches:
                watches = list(self.watches.values())
                try:
                    if connection is None:
                        connection = await pool.get_connection()
                    if monotonic() - renewed_at >= store.renew_every:
                        started = monotonic()
                        ops = [store.script("renew", w.key, w.token, store.lease_px) for w in watches]
                        states = await _pipelined(store, connection, ops)
                        renewed_at = started
                        for watch, state in zip(watches, states, strict=True):
                            watch.last = started
                            if not watch.step(state, None):
                                self.remove(watch)
                        continue
                    wait = max(0.01, store.renew_every - (monotonic() - renewed_at))
                    lists = [store.keys(w.key)[3] for w in watches]
                    popped = (await _pipelined(store, connection, [("BLPOP", *lists, f"{wait:.3f}")]))[0]
                except asyncio.CancelledError:
                    raise
                except Exception:
                    if connection is not None:
                        await connection.disconnect()
                        await pool.release(connection)
                        connection = None
                    now = monotonic()
                    for watch in watches:
                        if now - watch.last > store.lease:  # it cannot prove it is alive: subscribers see it lost
                            watch.stop()
                            self.remove(watch)
                    await asyncio.sleep(min(store.renew_every, 0.1))
                    continue
                if popped:
                    name = _text(popped[0])
                    for watch in watches:
                        if store.keys(watch.key)[3] == name and not watch.step(0, popped):
                            self.remove(watch)
        finally:
            self.task = None
            if connection is not None:
                await pool.release(connection)


class RedisStore:
    """Runs and events in Redis; see the module's docstring for the keys and the scripts."""

    shared = True
    faces: frozenset[Face] = frozenset(("sync", "async"))

    def need(self, face: Face, method: str) -> None:
        if face not in self.faces:
            raise TypeError(f"this relay does not serve the {face} face ({method})")

    def __init__(
        self,
        sync: Any,
        aclient: Callable[[], Any] | None,
        *,
        prefix: str,
        maxlen: int,
        ttl: float,
        lease: float,
        max_runs: int,
        queue_timeout: float,
        socket_timeout: float | None,
        describe: str,
    ) -> None:
        #: the sync client (None: this store serves the async face only)
        self.sync = sync
        #: returns the async client for the running loop (None: the sync face only)
        self.aclient = aclient
        self.prefix = prefix
        self.maxlen = maxlen
        self.ttl = ttl
        self.lease = lease
        self.max_runs = max_runs
        self.queue_timeout = queue_timeout
        self.describe = describe
        self.ttl_ms = max(1, round(ttl * 1000))
        self.lease_ms = max(1, round(lease * 1000))
        #: the lease key lives this long unless renewed; renewed every `renew_every` s
        self.lease_px = max(1, round(lease * 700))
        self.renew_every = lease / 5
        #: the longest a read blocks: a lost producer is seen within `lease` s
        self.read_slice = min(0.25, lease / 4)
        if socket_timeout:  # a blocking command must return before the client gives up on it
            self.renew_every = min(self.renew_every, socket_timeout / 2)
            self.read_slice = min(self.read_slice, socket_timeout / 2)
        #: the shortest time between the starts of two round trips of a loop's calls (`_Calls`:
        #: the appends, the set-ups, the checks): the longest a call waits to go with others
        self.calls_round = 0.002
        #: with a socket timeout, a loop's hub pings Redis this often (so that its reads, which
        #: wait for pushes, always get something within the timeout)
        self.hub_ping_every = min(1.0, socket_timeout / 2) if socket_timeout else 1.0
        #: per event loop: the hub of its subscribers, its pipelined writes, its producers' leases
        self._hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Hub] = weakref.WeakKeyDictionary()
        self._calls: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Calls] = weakref.WeakKeyDictionary()
        self._watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watches] = weakref.WeakKeyDictionary()
        self._shas: dict[str, str] = {}
        #: this process's producers: key -> lease token
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        #: a hub said once that Redis refused its subscriptions (`_Hub.poll`)
        self.warned_poll = False

    # -- keys, scripts, round trips -------------------------------------------------

    def hub(self) -> _Hub:
        """The running loop's hub."""
        loop = asyncio.get_running_loop()
        hub = self._hubs.get(loop)
        if hub is None:
            hub = self._hubs[loop] = _Hub(self)
        return hub

    def areader(self, key: str) -> _HubReader:
        return _HubReader(self, key)

    def keys(self, key: str) -> list[str]:
        base = f"{self.prefix}:{{{key}}}"
        return [
            f"{base}:run",
            f"{base}:events",
            f"{base}:lease",
            f"{base}:cancel",
            f"{self.prefix}:runs",
        ]

    def sha(self, name: str) -> str:
        """The SHA1 of one of the scripts (as loaded: with the common functions)."""
        sha = self._shas.get(name)
        if sha is None:
            sha = self._shas[name] = hashlib.sha1((_LUA_COMMON + _SCRIPTS[name]).encode()).hexdigest()
        return sha

    def script(self, name: str, key: str, *args: Any) -> tuple[Any, ...]:
        """An `EVALSHA` of one of the scripts, on the run's five keys (`append`: see `append_ops`)."""
        return ("EVALSHA", self.sha(name), 5, *self.keys(key), key, self.ttl_ms, *args)

    def call(self, ops: list[tuple[Any, ...]]) -> list[Any]:
        """Run `ops` in one pipeline (one round trip); load the scripts once if Redis lost them."""
        from redis.exceptions import NoScriptError

        for attempt in (0, 1):
            pipe = self.sync.pipeline(transaction=False)
            for op in ops:
                pipe.execute_command(*op)
            try:
                return list(pipe.execute())
            except NoScriptError:
                if attempt:
                    raise
                self._load(self.sync)
        raise AssertionError("unreachable")

    async def acall(self, ops: list[tuple[Any, ...]]) -> list[Any]:
        """`call` on the async client of the running loop: in the loop's next round trip (`_Calls`)."""
        if self.aclient is None:
            raise TypeError("this relay has no asyncio client")
        loop = asyncio.get_running_loop()
        calls = self._calls.get(loop)
        if calls is None:
            calls = self._calls[loop] = _Calls(self)
        return await calls.call(ops)

    def apool(self) -> Any:
        """The connection pool of the asyncio client (the hub, the calls and the watcher
        take a connection of their own from it)."""
        if self.aclient is None:
            raise TypeError("this relay has no asyncio client")
        return self.aclient().connection_pool

    async def alone(self, ops: list[tuple[Any, ...]]) -> list[Any]:
        """`ops` in a round trip of their own, on a connection of the pool (a blocking read)."""
        pool = self.apool()
        connection = await pool.get_connection()
        try:
            replies = await _pipelined(self, connection, ops)
        except BaseException:  # the connection may be out of step: it is dropped
            await connection.disconnect()
            await pool.release(connection)
            raise
        await pool.release(connection)
        return replies

    def _load(self, client: Any) -> None:
        pipe = client.pipeline(transaction=False)
        for name in _SCRIPTS:
            pipe.execute_command("SCRIPT", "LOAD", _LUA_COMMON + _SCRIPTS[name])
        pipe.execute()

    # -- the producer side ----------------------------------------------------------

    def begin_ops(self, key: str, queued: bool) -> tuple[str, list[tuple[Any, ...]]]:
        token = secrets.token_hex(8)
        short = short_key(key)
        lostq = ProducerLost(
            f"the run reserved under {short!r} was not started within queue_timeout={self.queue_timeout:g} s"
        )
        lostp = ProducerLost(
            f"the producer of {short!r} stopped renewing its lease (lease={self.lease:g} s) without "
            "recording an outcome: its process was killed, its machine lost, or it lost its connection to Redis"
        )
        args = (
            "1" if queued else "0",
            self.max_runs,
            max(1, round(self.queue_timeout * 1000)),
            self.lease_px,
            token,
            self.maxlen,
            dump_outcome(Outcome("lost", error=lostq)),
            error_text(lostq),
            dump_outcome(Outcome("lost", error=lostp)),
            error_text(lostp),
        )
        return token, [self.script("begin", key, *args)]

    def begin_done(self, key: str, queued: bool, token: str, reply: Any) -> int:
        answer = _text(reply[0])
        if answer == "ok":
            attempt = int(reply[1])
            if attempt and not queued:
                with self._lock:
                    self._held[key] = token
            return max(attempt, 1) if queued else attempt
        if answer == "full":
            raise RelayFull(
                f"this relay ({self.describe}) already keeps max_runs={self.max_runs} runs; "
                f"finished runs are released {self.ttl:g} s (ttl) after they end"
            )
        status = _text(reply[1])
        if queued:
            raise ValueError(f"the key {short_key(key)!r} is already in use")
        raise ValueError(
            f"a run was already published under the key {short_key(key)!r} (status {status!r}); "
            "a key takes a new run only when reserved, or after its last attempt ended 'error' or 'lost'"
        )

    def begin(self, key: str, *, queued: bool) -> int:
        token, ops = self.begin_ops(key, queued)
        return self.begin_done(key, queued, token, self.call(ops)[0])

    async def abegin(self, key: str, *, queued: bool) -> int:
        token, ops = self.begin_ops(key, queued)
        return self.begin_done(key, queued, token, (await self.acall(ops))[0])

    def append_ops(self, key: str, events: list[Event]) -> list[tuple[Any, ...]]:
        """One script per `_APPEND_MAX` events (a script blocks Redis while it runs), in one pipeline."""
        token = self._held.get(key, "")
        lines = [dump_event(e) for e in events]
        run, stream = self.keys(key)[:2]
        sha = self.sha("append")
        return [
            ("EVALSHA", sha, 2, run, stream, token, self.maxlen, *lines[i : i + _APPEND_MAX])
            for i in range(0, len(lines), _APPEND_MAX)
        ]

    def append_done(self, key: str, replies: list[Any]) -> None:
        if any(int(reply) == -1 for reply in replies):
            self._held.pop(key, None)
            error = StreamNotFound(key)
            error.add_note(
                f"callstream: the run's keys are gone from Redis ({self.describe}): expired, deleted, "
                "or the server restarted without persistence"
            )
            raise error
        # -2: the run ended (cancelled, declared lost) while the producer was between callbacks;
        # its watcher stops it

    def append(self, key: str, events: list[Event]) -> None:
        self.append_done(key, self.call(self.append_ops(key, events)))

    async def aappend(self, key: str, events: list[Event]) -> None:
        self.append_done(key, await self.acall(self.append_ops(key, events)))

    def finish_ops(self, key: str, outcome: Outcome) -> list[tuple[Any, ...]]:
        with self._lock:
            token = self._held.pop(key, "")
        errtext = error_text(outcome.error) if outcome.error is not None else ""
        return [self.script("finish", key, token, outcome.status, dump_outcome(outcome), errtext)]

    def finish(self, key: str, outcome: Outcome) -> bool:
        return int(self.call(self.finish_ops(key, outcome))[0]) == 1

    async def afinish(self, key: str, outcome: Outcome) -> bool:
        return int((await self.acall(self.finish_ops(key, outcome)))[0]) == 1

    def renew_ops(self, key: str, token: str) -> list[tuple[Any, ...]]:
        wait = max(self.renew_every, 0.01)
        return [self.script("renew", key, token, self.lease_px), ("BLPOP", self.keys(key)[3], f"{wait:.3f}")]

    @contextlib.contextmanager
    def hold(self, key: str, stop: Callable[[], None]) -> Iterator[None]:
        token = self._held.get(key)
        if token is None:
            yield
            return
        watch = _Watch(self, key, token, stop)
        thread = threading.Thread(target=watch.run, name=f"callstream-lease-{key[:6]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            watch.done = True  # the finish's "end" entry on the cancel list wakes it

    @contextlib.asynccontextmanager
    async def ahold(self, key: str, stop: Callable[[], None]) -> AsyncIterator[None]:
        token = self._held.get(key)
        if token is None:
            yield
            return
        loop = asyncio.get_running_loop()
        watches = self._watches.get(loop)
        if watches is None:
            watches = self._watches[loop] = _Watches(self)
        watch = _Watch(self, key, token, stop)
        watches.add(watch)
        try:
            yield
        finally:
            watches.remove(watch)

    # -- cancelling, status -------------------------------------------------------------

    def cancel_ops(self, key: str) -> list[tuple[Any, ...]]:
        return [self.script("cancel", key)]

    def cancel_done(self, key: str, reply: Any) -> RelayStatus:
        if reply is None:
            raise StreamNotFound(key)
        status: RelayStatus = _text(reply)  # type: ignore[assignment]
        return status

    def request_cancel(self, key: str) -> RelayStatus:
        return self.cancel_done(key, self.call(self.cancel_ops(key))[0])

    async def arequest_cancel(self, key: str) -> RelayStatus:
        return self.cancel_done(key, (await self.acall(self.cancel_ops(key)))[0])

    def _inspected(self, reply: Any) -> tuple[RelayStatus, int, bool] | None:
        if reply is None:
            return None
        status: RelayStatus = _text(reply[0])  # type: ignore[assignment]
        return status, int(reply[1]), reply[2] is not None and _text(reply[2]) == "1"

    def status(self, key: str) -> RelayStatus | None:
        got = self._inspected(self.call([self.script("inspect", key, "0")])[0])
        return None if got is None else got[0]

    async def astatus(self, key: str) -> RelayStatus | None:
        got = self._inspected((await self.acall([self.script("inspect", key, "0")]))[0])
        return None if got is None else got[0]

    def cancel_requested(self, key: str) -> bool:
        got = self._inspected(self.call([self.script("inspect", key, "0")])[0])
        return got is not None and (got[2] or got[0] == "cancelled")

    async def acancel_requested(self, key: str) -> bool:
        got = self._inspected((await self.acall([self.script("inspect", key, "0")]))[0])
        return got is not None and (got[2] or got[0] == "cancelled")

    # -- the subscriber side ----------------------------------------------------------

    def _position(self, key: str, after: str | None) -> int:
        return 0 if after is None else event_position(after)

    def read_ops(self, key: str, position: int, wait: float, limit: int) -> list[tuple[Any, ...]]:
        xread: tuple[Any, ...] = ("XREAD", "COUNT", max(limit, 1))
        if wait > 0:
            xread += ("BLOCK", max(1, round(min(wait, self.read_slice) * 1000)))
        return [self.script("inspect", key, "1"), (*xread, "STREAMS", self.keys(key)[1], f"{position}-0")]

    def read_done(self, key: str, after: str | None, position: int, limit: int, replies: list[Any]) -> Batch:
        got = self._inspected(replies[0])
        if got is None:
            raise StreamNotFound(key)
        status, seq, _ = got
        if position > seq:
            raise StreamGap(f"no event {after!r} was issued under {short_key(key)!r} (the last is {seq})")
        entries = [_entry(entry_id, fields) for entry_id, fields in _entries(replies[1])]
        return self.batch(key, after, position, limit, entries, status)

    def batch(
        self,
        key: str,
        after: str | None,
        position: int,
        limit: int,
        entries: list[tuple[int, int, Any]],
        status: RelayStatus,
    ) -> Batch:
        """The events of stream entries `(n, sub, value)` read after `position`, up to the attempt's end."""
        events: list[Event] = []
        outcome: Outcome | None = None
        expected = position + 1
        for n, sub, value in entries:
            if sub == 0:
                if n != expected:
                    self._gap(key, after, n)
                events.append(load_event(value, str(n)))
                expected = n + 1
            else:  # the attempt's end, right after its last event
                if n != expected - 1:
                    self._gap(key, after, n + 1)
                outcome = load_outcome(value)
                break
        if len(events) > limit:
            del events[limit:]
            outcome = None
        if outcome is not None:
            status = outcome.status
        return Batch(events, outcome, status)

    def _gap(self, key: str, after: str | None, first: int) -> None:
        if after is None:
            raise StreamGap(
                f"the first {first - 1} event(s) of {short_key(key)!r} are no longer kept "
                f"(maxlen={self.maxlen}); the oldest kept event follows id {first - 1}"
            )
        raise StreamGap(
            f"the events after {after!r} of {short_key(key)!r} are no longer kept "
            f"(maxlen={self.maxlen}); the oldest kept event is {first}"
        )

    def read(self, key: str, after: str | None, wait: float, limit: int) -> Batch:
        position = self._position(key, after)
        replies = self.call(self.read_ops(key, position, wait, limit))
        return self.read_done(key, after, position, limit, replies)

    async def aread(self, key: str, after: str | None, wait: float, limit: int) -> Batch:
        position = self._position(key, after)
        ops = self.read_ops(key, position, wait, limit)
        replies = await (self.alone(ops) if wait > 0 else self.acall(ops))  # a blocking read holds its connection
        return self.read_done(key, after, position, limit, replies)

    def attach(self, key: str) -> None:
        self.call([self.script("watchers", key, 1)])

    async def aattach(self, key: str) -> None:
        await self.acall([self.script("watchers", key, 1)])

    def detach(self, key: str) -> int:
        return int(self.call([self.script("watchers", key, -1)])[0])

    async def adetach(self, key: str) -> int:
        return int((await self.acall([self.script("watchers", key, -1)]))[0])

    def _idle(self, reply: Any) -> float | None:
        if reply is None or int(reply) < 0:
            return None
        return int(reply) / 1000

    def idle_for(self, key: str) -> float | None:
        return self._idle(self.call([self.script("idle", key, _STALE_MS)])[0])

    async def aidle_for(self, key: str) -> float | None:
        return self._idle((await self.acall([self.script("idle", key, _STALE_MS)]))[0])


class AsyncClients:
    """One `redis.asyncio.Redis` per event loop, for a relay given a URL.

    An asyncio client belongs to the loop it first ran on. Each loop's client
    is closed when the loop's tasks are cancelled at its end (`asyncio.run`).
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self.keepers: set[asyncio.Task[None]] = set()

    def __call__(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self.clients.get(loop)
        if client is None:
            client = self.clients[loop] = self.factory()
            task = loop.create_task(self._keep(loop, client), name="callstream-redis-client")
            self.keepers.add(task)
            task.add_done_callback(self.keepers.discard)
        return client

    async def _keep(self, loop: asyncio.AbstractEventLoop, client: Any) -> None:
        try:
            await loop.create_future()
        finally:
            # The loop ends (`asyncio.run` cancels every task): the other tasks may still need the
            # client in their own cleanup (a subscription's detach), so it is closed after them.
            me = asyncio.current_task()
            for _ in range(400):
                if all(task is me or task.done() for task in asyncio.all_tasks(loop)):
                    break
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.005)
            self.clients.pop(loop, None)
            with contextlib.suppress(Exception):
                await client.aclose()

    async def aclose(self) -> None:
        """Close the running loop's client."""
        loop = asyncio.get_running_loop()
        client = self.clients.pop(loop, None)
        if client is not None:
            await client.aclose()
