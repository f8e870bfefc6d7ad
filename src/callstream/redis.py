"""`RedisRelay`: runs published on Redis Streams, read and resumed from any process.

```python
from callstream.redis import RedisRelay

relay = RedisRelay("redis://localhost:6379/0")       # every web process and worker alike
key = relay.publish(callstream.iter_callbacks(agent, inputs))
with relay.subscribe(key, after=last_id) as sub:     # in any process, on any machine
    ...
```

Needs the `redis` client (`pip install "callstream[redis]"`).
"""

from __future__ import annotations

from typing import Any

from ._redis_store import AsyncClients, RedisStore
from ._relay import Relay, _check_count, _check_seconds
from ._relay_store import Face

__all__ = ("RedisRelay",)

_SYNC_FACE = "publish, run, subscribe, reserve, cancel, status"
_ASYNC_FACE = "apublish, arun, asubscribe, areserve, acancel, astatus"
#: The connections of the asyncio client a relay makes from a URL, per event loop.
_ASYNC_CONNECTIONS = 64


def _redis() -> Any:
    try:
        import redis
        import redis.asyncio
    except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
        raise ImportError(
            'callstream.redis.RedisRelay needs the redis client: pip install "callstream[redis]"'
        ) from exc
    return redis


def _where(client: Any) -> str:
    """Where a client connects, without its credentials (for messages and `repr`)."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None) or {}
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}/{kwargs.get('db', 0)}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def _socket_timeout(client: Any) -> float | None:
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None) or {}
    timeout = kwargs.get("socket_timeout", kwargs.get("orig_socket_timeout"))
    return float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None


class _Store(RedisStore):
    """The Redis store, with the faces its client serves."""

    def __init__(self, faces: frozenset[Face], given: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.faces = faces
        self.given = given

    def need(self, face: Face, method: str) -> None:
        if face in self.faces:
            return
        if face == "sync":
            raise TypeError(
                f"RedisRelay.{method}() needs a sync client: this relay was given {self.given}, which "
                f"serves the async face only ({_ASYNC_FACE}); give RedisRelay a redis.Redis client, or a "
                "URL (both faces)"
            )
        raise TypeError(
            f"RedisRelay.{method}() needs an asyncio client: this relay was given {self.given}, which serves "
            f"the sync face only ({_SYNC_FACE}); give RedisRelay a redis.asyncio.Redis client, or a URL "
            "(both faces)"
        )


class RedisRelay(Relay):
    """A relay on Redis Streams: publish in one process, subscribe and resume in any other.

    ```python
    relay = RedisRelay("redis://localhost:6379/0")     # a URL serves both faces
    key = relay.reserve()                              # web process: hand the key to a worker
    summary = relay.run(stream, key=key)               # worker: run it, events into Redis
    with relay.subscribe(key, after=last_id) as sub:   # any web process: resume by id
        ...
    relay.cancel(key)                                  # from anywhere: the worker stops at its next callback
    ```

    Everything `MemoryRelay` does, across processes and machines, with the
    same ids (`"1"`, `"2"`, ..., strictly increasing per key, across
    attempts). Each run is one Redis Stream (`XADD ... MAXLEN ~`, read with
    `XREAD`; an event loop's subscribers get its events pushed, on the run's
    Pub/Sub channel) beside a small state hash; every key is under `prefix` and
    has a TTL (a user with Redis ACLs needs the channels too: `&prefix:*`). A producer writes each batch of events in one round trip,
    renews a lease while it runs, and stops at its next callback when any
    process cancels its run. Only JSON is written: a subscriber's events equal
    the producer's in kind, name, ids, tags, metadata, text and JSON-able data,
    with message chunks, tool calls and usage rebuilt (so `tokens(answer_only=True)`,
    `summary` and `output` match a local subscriber); an error arrives as
    `callstream.RemoteError` naming its type and message.

    Args:
        url_or_client: a URL (`"redis://host:6379/0"`, `"rediss://..."`,
            `"unix://..."`: both faces, with a client per event loop for the
            async one), or your own `redis.Redis` (the sync face: `publish`,
            `run`, `subscribe`, `reserve`, `cancel`, `status`) or
            `redis.asyncio.Redis` (the async face: `apublish`, `arun`,
            `asubscribe`, `areserve`, `acancel`, `astatus`) with your TLS,
            ACL and timeouts. The face a client does not serve raises `TypeError`.
        prefix: every key starts with `prefix:`.
        maxlen: the most events kept per run, approximately (`MAXLEN ~`:
            Redis trims whole stream nodes, so a few more may be kept); a
            subscriber asking for a trimmed event gets `StreamGap`.
        ttl: seconds a finished run stays readable; then its keys expire.
        linger: None (default): a run goes on when its subscribers leave;
            `s`: it is cancelled once it has had no subscriber, in any
            process, for `s` seconds.
        lease: seconds within which subscribers learn that a producer died
            (`ProducerLost`): the producer renews its lease every `lease / 5`.
        max_runs: the most runs kept in Redis under `prefix` (queued, running
            and retained); one more raises `RelayFull`.
        queue_timeout: seconds a reserved key waits for its run before it
            ends "lost".

    A subscription needs a Redis that answers: a Redis that goes away raises
    the client's `redis.exceptions.ConnectionError` in the subscribers and in
    the producer (whose run stops); nothing is truncated silently.
    """

    def __init__(
        self,
        url_or_client: Any,
        *,
        prefix: str = "callstream",
        maxlen: int = 10_000,
        ttl: float = 3600,
        linger: float | None = None,
        lease: float = 3.0,
        max_runs: int = 100_000,
        queue_timeout: float = 300,
    ) -> None:
        redis = _redis()
        if not isinstance(prefix, str) or not (0 < len(prefix) <= 100) or any(c.isspace() for c in prefix):
            raise ValueError(f"prefix must be 1 to 100 characters with no whitespace; got {prefix!r}")
        self._own: Any = None
        self._own_async: AsyncClients | None = None
        sync: Any = None
        aclient: Any = None
        faces: frozenset[Face]
        if isinstance(url_or_client, str):
            from redis.asyncio.retry import Retry as AsyncRetry
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry

            url = url_or_client
            # A Redis that is down is said within about a second, not after a long retry loop.
            sync = self._own = redis.Redis.from_url(url, retry=Retry(ExponentialBackoff(0.25, 0.01), 3))
            aclient = self._own_async = AsyncClients(
                lambda: redis.asyncio.Redis.from_pool(
                    # Subscribers share one subscribed connection (the loop's hub) and writes are
                    # pipelined, so a few connections serve thousands of runs; a burst of calls
                    # waits for one instead of failing ("Too many connections").
                    redis.asyncio.BlockingConnectionPool.from_url(
                        url,
                        max_connections=_ASYNC_CONNECTIONS,
                        timeout=None,
                        retry=AsyncRetry(ExponentialBackoff(0.25, 0.01), 3),
                    )
                )
            )
            faces, given, where = frozenset(("sync", "async")), "a URL", _where(sync)
        elif isinstance(url_or_client, redis.asyncio.Redis):
            client = url_or_client
            aclient = lambda: client  # noqa: E731
            faces, given, where = frozenset(("async",)), "a redis.asyncio.Redis client", _where(client)
        elif isinstance(url_or_client, redis.Redis):
            sync = url_or_client
            faces, given, where = frozenset(("sync",)), "a redis.Redis client", _where(sync)
        else:
            raise TypeError(
                "RedisRelay takes a URL ('redis://host:6379/0'), a redis.Redis or a redis.asyncio.Redis "
                f"client, not {type(url_or_client).__name__}"
            )
        self._where = where
        self._redis_store = _Store(
            faces,
            given,
            sync=sync,
            aclient=aclient,
            prefix=prefix,
            maxlen=_check_count("maxlen", maxlen),
            ttl=_check_seconds("ttl", ttl),
            lease=_check_seconds("lease", lease),
            max_runs=_check_count("max_runs", max_runs),
            queue_timeout=_check_seconds("queue_timeout", queue_timeout),
            socket_timeout=_socket_timeout(sync if sync is not None else url_or_client),
            describe=f"Redis at {where}, prefix {prefix!r}",
        )
        super().__init__(self._redis_store, linger=linger)

    def close(self) -> None:
        """Close the connections of the clients this relay made from its URL (a client you gave stays yours)."""
        if self._own is not None:
            self._own.close()

    async def aclose(self) -> None:
        """`close`, and the running loop's asyncio client made from the URL."""
        self.close()
        if self._own_async is not None:
            await self._own_async.aclose()

    def __repr__(self) -> str:
        s = self._redis_store
        return (
            f"<RedisRelay {s.describe}, maxlen={s.maxlen}, ttl={s.ttl:g}, linger={self._linger}, "
            f"lease={s.lease:g}, max_runs={s.max_runs}>"
        )
