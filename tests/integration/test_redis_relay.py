"""RedisRelay across processes, and what only Redis can do wrong (issue 18).

The relay's rules are tested on both relays in tests/unit/test_relay.py; here:
a producer or a subscriber in another process (`tests/redis_worker.py`), a
cancel from another process, a producer killed with SIGKILL, a redis-server
restarted mid-stream, the keys' TTLs, JSON on the wire, the client faces.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

import callstream
from callstream import Event, ProducerLost, RelayFull, RemoteError, StreamGap, StreamNotFound
from callstream.redis import RedisRelay
from tests.helpers import Counter, drain_into, wait_until
from tests.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)"
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prefix() -> str:
    return f"it-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def relay(redis_server: RedisServer, prefix: str) -> Iterator[RedisRelay]:
    relay = RedisRelay(redis_server.url, prefix=prefix, lease=2.0)
    yield relay
    relay.close()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[Any]:
    """A plain client, to look at what the relay wrote."""
    client = redis_server.client()
    yield client
    client.close()


class Worker:
    """`python -m tests.redis_worker ...`: its JSON reports, line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.redis_worker", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def report(self, timeout: float = 30) -> dict[str, Any]:
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"the worker reported nothing; its stderr:\n{err[-3000:]}")
        return dict(json.loads(result[0]))

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


def direct_agent_run() -> dict[str, Any]:
    """What a local consumer of the same agent run sees."""
    from tests.redis_worker import agent

    stream = callstream.iter_callbacks(agent(), {"messages": [("user", "2+3?")]})
    answer = "".join(stream.tokens(answer_only=True))
    summary = stream.summary
    return {
        "answer": answer,
        "tool_calls": [[c.name, c.args, c.result.content] for c in summary.tool_calls],
        "usage": summary.usage,
        "llm_calls": summary.llm_calls,
        "last": stream.output["messages"][-1].content,
    }


# -- across processes -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_published_here_is_read_in_another_process_as_here(relay: RedisRelay, prefix: str) -> None:
    from tests.redis_worker import agent

    key = relay.publish(callstream.iter_callbacks(agent(), {"messages": [("user", "2+3?")]}))
    with relay.subscribe(key) as sub:
        local = [{"id": e.id, "kind": e.kind, "text": e.text} for e in sub]
    worker = Worker("subscribe", _url(relay), prefix, key)
    try:
        remote = worker.report()
    finally:
        worker.stop()
    expected = direct_agent_run()
    assert remote["events"] == local and remote["status"] == "completed"
    assert {k: remote[k] for k in expected} == expected
    assert remote["answer"] == "It is 5." and remote["tool_calls"] == [["add", {"a": 2, "b": 3}, "5"]]
    assert remote["usage"] and remote["usage"]["total_tokens"] > 0


@pytest.mark.slow
def test_a_run_in_a_worker_process_is_read_here_from_its_reservation(relay: RedisRelay, prefix: str) -> None:
    key = relay.reserve()
    sub = relay.subscribe(key)  # at once: queued, no StreamNotFound
    worker = Worker("agent", _url(relay), prefix, key)
    try:
        with sub:
            answer = "".join(sub.tokens(answer_only=True))
        assert worker.report()["status"] == "completed"
    finally:
        worker.stop()
    expected = direct_agent_run()
    summary = sub.summary
    assert answer == expected["answer"] == "It is 5."
    assert [[c.name, c.args, c.result.content] for c in summary.tool_calls] == expected["tool_calls"]
    assert summary.usage == expected["usage"] and summary.llm_calls == expected["llm_calls"] == 2
    assert sub.output["messages"][-1].content == expected["last"] and relay.status(key) == "completed"
    with relay.subscribe(key) as again:
        events = list(again)
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    assert [e.kind for e in events].count("tool_end") == 1 and "preamble" in [e.kind for e in events]


@pytest.mark.slow
def test_cancel_here_stops_a_producer_in_another_process(relay: RedisRelay, prefix: str) -> None:
    key = relay.reserve()
    worker = Worker("tokens", _url(relay), prefix, key)
    try:
        got: list[Event] = []
        with relay.subscribe(key) as sub:
            for event in sub:
                got.append(event)
                if len(got) == 20:
                    cancelled = time.monotonic()
                    relay.cancel(key)
        assert worker.report() == {"started": True}
        report = worker.report()
    finally:
        worker.stop()
    latency = report["stopped_at"] - cancelled
    print(f"\ncancel across processes: the producer stopped {latency * 1000:.1f} ms after relay.cancel()")
    assert report["status"] == "cancelled" and relay.status(key) == "cancelled"
    assert 0 <= latency < 0.5
    assert sub.status == "cancelled" and len(got) < report["count"] + 1 < 1000


@pytest.mark.slow
def test_a_producer_killed_with_sigkill_is_lost_within_its_lease(redis_server: RedisServer, prefix: str) -> None:
    lease = 1.0
    relay = RedisRelay(redis_server.url, prefix=prefix, lease=lease)
    key = relay.reserve()
    worker = Worker("tokens", redis_server.url, prefix, key, str(lease))
    got: list[Event] = []
    killed = 0.0
    try:
        with pytest.raises(ProducerLost, match="stopped renewing its lease") as info:
            with relay.subscribe(key) as sub:
                for event in sub:
                    got.append(event)
                    if len(got) == 10:
                        worker.proc.kill()  # SIGKILL: no outcome recorded
                        worker.proc.wait(10)
                        killed = time.monotonic()
        assert killed, f"ProducerLost before the kill: {info.value}"
        detected = time.monotonic() - killed
    finally:
        worker.stop()
        relay.close()
    print(f"\nSIGKILL of the producer: ProducerLost after {detected * 1000:.0f} ms (lease={lease} s)")
    assert detected < lease + 0.25  # 0.7 lease for the lease key to expire, then one read slice (lease / 4)
    assert isinstance(info.value, callstream.StreamError)
    assert [int(e.id) for e in got] == list(range(1, len(got) + 1))


# -- Redis going away -------------------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


def test_a_write_cancelled_halfway_drops_its_connection(own_server: RedisServer) -> None:
    # A write the socket could not take at once is awaited; cancelled then, part of the
    # command is on the wire: that connection must never carry another command.
    import os
    import signal

    from callstream._redis_store import _send

    async def go() -> bool:
        client = redis.asyncio.Redis.from_url(own_server.url)
        connection = await client.connection_pool.get_connection()
        assert own_server.proc is not None
        os.kill(own_server.proc.pid, signal.SIGSTOP)  # it reads nothing: the socket's buffers fill
        try:
            payload = b"x" * (64 << 20)
            command = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%s\r\n" % (len(payload), payload)
            write = asyncio.ensure_future(_send(connection, command))
            await asyncio.sleep(0)  # it wrote what the socket took, and waits to write the rest
            assert not write.done()
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
            return bool(connection.is_connected)
        finally:
            os.kill(own_server.proc.pid, signal.SIGCONT)
            await client.aclose()

    assert asyncio.run(go()) is False


def test_a_redis_restart_mid_stream_is_an_error_for_both_sides_then_runs_publish_again(own_server: RedisServer) -> None:
    relay = RedisRelay(own_server.url, prefix="restart", lease=1.0)
    producer = Counter(100_000, delay=0.002)
    outcome: list[BaseException | None] = []

    def work() -> None:
        try:
            relay.run(callstream.from_callback(producer), key="long-run")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    got: list[Event] = []
    errors: list[BaseException] = []
    wait_until(lambda: relay.status("long-run") == "running", what="the run to start")
    reader = threading.Thread(target=_drain, args=(relay, "long-run", got, errors))
    reader.start()
    wait_until(lambda: len(got) >= 10, what="the subscriber to read")
    own_server.stop()  # SIGKILL: every connection drops, nothing is kept
    stopped = time.monotonic()
    reader.join(10)
    thread.join(10)
    took = time.monotonic() - stopped
    assert not reader.is_alive() and not thread.is_alive(), "a side hung"
    print(f"\nredis-server killed: subscriber and producer raised within {took * 1000:.0f} ms")
    assert errors and isinstance(errors[0], redis.exceptions.ConnectionError), errors
    assert outcome and isinstance(outcome[0], redis.exceptions.ConnectionError), outcome
    assert producer.finished.wait(5)  # the producer was stopped, not left running
    own_server.start()  # the same port, empty (no persistence)
    assert relay.status("long-run") is None  # its keys went with the server: said, not invented
    summary = relay.run(callstream.from_callback(Counter(3)), key="after-restart")
    assert summary.status == "completed"
    with relay.subscribe("after-restart") as again:
        assert [e.text for e in again] == ["t0", "t1", "t2"]
    relay.close()


def _drain(relay: RedisRelay, key: str, got: list[Event], errors: list[BaseException]) -> None:
    try:
        drain_into("sync", relay.subscribe(key), got)
    except BaseException as exc:
        errors.append(exc)


def test_a_producer_that_lost_its_lease_stops_and_writes_nothing_more(relay: RedisRelay, raw: Any) -> None:
    producer = Counter(100_000, delay=0.002)
    key = relay.publish(callstream.from_callback(producer))
    wait_until(lambda: producer.count >= 5, what="the producer to run")
    store = relay._redis_store
    raw.delete(store.keys(key)[2])  # its lease key is gone (a long pause, a partition)...
    assert relay.status(key) == "lost"  # ... and a reader saw it first: the run ended "lost"
    assert producer.finished.wait(5)  # the producer learns it at its next renewal and stops
    with pytest.raises(ProducerLost) as info:
        list(relay.subscribe(key))
    assert "lease" in str(info.value)
    length = raw.xlen(store.keys(key)[1])
    time.sleep(0.05)
    assert raw.xlen(store.keys(key)[1]) == length  # nothing written after the end
    # a retry (a task redelivered after its worker died) is a new attempt under the same key
    assert relay.run(callstream.from_callback(Counter(2)), key=key).status == "completed"
    with relay.subscribe(key) as sub:
        events = list(sub)
    attempt = next(e for e in events if e.kind == "attempt")
    assert attempt.data["attempt"] == 2 and attempt.data["previous"]["status"] == "lost"
    assert attempt.data["previous"]["error"].startswith("ProducerLost: the producer of")
    assert [e.text for e in events[events.index(attempt) + 1 :]] == ["t0", "t1"] and sub.output == "done"
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))


def test_linger_counts_the_subscribers_of_every_process(redis_server: RedisServer, prefix: str) -> None:
    producer_side = RedisRelay(redis_server.url, prefix=prefix, linger=0.3, lease=1.0)
    elsewhere = RedisRelay(redis_server.url, prefix=prefix)  # another process's relay: its detach is not seen here
    producer = Counter(100_000, delay=0.002)
    try:
        key = producer_side.reserve()
        with elsewhere.subscribe(key) as sub:  # watching before the run starts: linger counts from there
            store = producer_side._redis_store
            wait_until(lambda: store.sync.hget(store.keys(key)[0], "subs") == b"1", what="the subscriber")
            producer_side.publish(callstream.from_callback(producer), key=key)
            started = time.monotonic()
            for _ in sub:
                if time.monotonic() - started > 0.9:  # three times linger, watched: the run goes on
                    break
        assert producer_side.status(key) == "running"
        left = time.monotonic()
        wait_until(lambda: producer_side.status(key) == "cancelled", what="linger to cancel the unwatched run")
        print(f"\nlinger=0.3 s across relays: cancelled {time.monotonic() - left:.2f} s after the last subscriber left")
        assert producer.finished.wait(5)
    finally:
        producer.release.set()
        producer_side.close()
        elsewhere.close()


# -- what is written -----------------------------------------------------------------------------


def _keys_and_ttls(raw: Any, prefix: str) -> dict[str, int]:
    return {k.decode(): raw.pttl(k) for k in raw.scan_iter(match=f"{prefix}:*")}


def test_every_key_is_under_the_prefix_and_has_a_ttl(relay: RedisRelay, raw: Any, prefix: str) -> None:
    queued, cancelled = relay.reserve(), relay.reserve()
    relay.cancel(cancelled)
    producer = Counter(10, stall_after=5)
    running = relay.publish(callstream.from_callback(producer))
    try:
        assert producer.stalled.wait(5)
        failed = relay.publish(callstream.from_callback(Counter(3, fail_after=2)))
        wait_until(lambda: relay.status(failed) == "error", what="the failing run")
        keys = _keys_and_ttls(raw, prefix)
        # queued: queue_timeout + ttl; running: ttl + lease after the last renewal; ended: ttl
        # (hash) x 3, running (hash, stream, lease, cancel list), failed (hash, stream), runs
        assert len(keys) == 3 + 4 + 2 + 1, keys
        assert all(0 < ttl <= (300 + 3600) * 1000 for ttl in keys.values()), keys  # none left forever
        assert f"{prefix}:runs" in keys and f"{prefix}:{{{running}}}:lease" in keys
        assert 0 < keys[f"{prefix}:{{{running}}}:lease"] <= 1400  # 0.7 lease (2 s), renewed every lease / 5
    finally:
        producer.release.set()
    wait_until(lambda: relay.status(running) == "completed", what="the run to end")
    keys = _keys_and_ttls(raw, prefix)
    ended = {k: ttl for k, ttl in keys.items() if queued not in k and not k.endswith(":runs")}
    assert ended and all(0 < ttl <= 3600 * 1000 for ttl in ended.values()), keys  # ttl once ended
    assert not any(k.endswith(":lease") for k in keys)  # released at the end
    assert set(keys) <= {f"{prefix}:runs"} | {
        f"{prefix}:{{{k}}}:{part}" for k in (queued, cancelled, running, failed) for part in ("run", "events", "cancel")
    }


def test_only_json_is_written(relay: RedisRelay, raw: Any, prefix: str) -> None:
    from tests.redis_worker import agent

    key = relay.publish(callstream.iter_callbacks(agent(), {"messages": [("user", "2+3?")]}))
    wait_until(lambda: relay.status(key) == "completed", what="the run")
    store = relay._redis_store
    entries = raw.xrange(store.keys(key)[1])
    assert len(entries) > 10
    kinds = set()
    for _, fields in entries:
        assert set(fields) <= {b"e", b"o"}
        for value in fields.values():
            decoded = json.loads(value)  # JSON, nothing else
            kinds.add(decoded.get("k", decoded.get("status")))
    assert {"token", "llm_end", "tool_end", "completed"} <= kinds
    state = raw.hgetall(store.keys(key)[0])
    for field in (b"outcome", b"lostq", b"lostp"):
        json.loads(state[field])
    assert b"pickle" not in b"".join(v for _, f in entries for v in f.values())


def test_a_malformed_or_foreign_after_is_a_gap(relay: RedisRelay) -> None:
    key = relay.publish(callstream.from_callback(Counter(3)))
    wait_until(lambda: relay.status(key) == "completed", what="the run")
    for after in ("1-0", "0-1", "$", "+", "-", ">", "\uff11", " 1", "1 ", "0x1", "4", "18446744073709551616"):
        with pytest.raises(StreamGap):
            relay.subscribe(key, after=after)
    assert [e.text for e in relay.subscribe(key, after="0")] == ["t0", "t1", "t2"]
    assert list(relay.subscribe(key, after="3")) == []


def test_max_runs_and_ttl_in_real_time(redis_server: RedisServer, prefix: str, raw: Any) -> None:
    relay = RedisRelay(redis_server.url, prefix=prefix, max_runs=2, ttl=0.3, lease=1.0)
    try:
        assert relay.run(callstream.from_callback(Counter(1)), key="a").status == "completed"
        relay.reserve("b")
        with pytest.raises(RelayFull, match="max_runs=2"):
            relay.reserve("c")
        wait_until(lambda: relay.status("a") is None, what="the finished run to expire")
        with pytest.raises(StreamNotFound):
            relay.subscribe("a")
        relay.reserve("c")
        assert raw.zcard(f"{prefix}:runs") == 2
    finally:
        relay.close()


# -- clients and faces ------------------------------------------------------------------------------


def test_a_client_serves_its_own_face_and_the_other_is_a_type_error(redis_server: RedisServer, prefix: str) -> None:
    sync_client = redis.Redis.from_url(redis_server.url)
    sync_relay = RedisRelay(sync_client, prefix=prefix)
    key = sync_relay.publish(callstream.from_callback(Counter(3)))
    with sync_relay.subscribe(key) as sub:
        assert [e.text for e in sub] == ["t0", "t1", "t2"]
    with pytest.raises(TypeError, match=r"apublish\(\) needs an asyncio client.*redis\.Redis client"):
        asyncio.run(sync_relay.apublish(callstream.afrom_callback(Counter(1))))
    for call in (
        lambda: sync_relay.asubscribe(key),
        lambda: asyncio.run(sync_relay.arun(callstream.afrom_callback(Counter(1)))),
        lambda: asyncio.run(sync_relay.astatus(key)),
        lambda: asyncio.run(sync_relay.acancel(key)),
        lambda: asyncio.run(sync_relay.areserve()),
    ):
        with pytest.raises(TypeError, match="needs an asyncio client"):
            call()

    async def on_the_loop() -> None:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        relay = RedisRelay(client, prefix=prefix)
        for call in (
            lambda: relay.publish(callstream.from_callback(Counter(1))),
            lambda: relay.run(callstream.from_callback(Counter(1))),
            lambda: relay.subscribe(key),
            lambda: relay.status(key),
            lambda: relay.cancel(key),
            lambda: relay.reserve(),
        ):
            with pytest.raises(TypeError, match=r"needs a sync client.*redis\.asyncio\.Redis client"):
                call()
        assert await relay.astatus(key) == "completed"  # the sync relay's run, seen by the async one
        async with relay.asubscribe(key) as sub:
            assert [e.text async for e in sub] == ["t0", "t1", "t2"]
        reserved = await relay.areserve()
        await relay.acancel(reserved)
        assert await relay.astatus(reserved) == "cancelled"
        summary = await relay.arun(callstream.afrom_callback(Counter(2)), key="async-run")
        assert summary.status == "completed"
        with pytest.raises(StreamNotFound):  # checked at the first read: no loop at the call
            async with relay.asubscribe("no-such-key") as sub:
                [e async for e in sub]
        await client.aclose()

    asyncio.run(on_the_loop())
    assert sync_relay.status("async-run") == "completed"
    with pytest.raises(TypeError, match="takes a URL"):
        RedisRelay(object())
    with pytest.raises(ValueError, match="prefix"):
        RedisRelay(redis_server.url, prefix="a b")
    sync_client.close()


def test_an_async_error_crosses_as_remote_error(relay: RedisRelay) -> None:
    async def go() -> None:
        key = await relay.apublish(callstream.afrom_callback(_failing))
        async with relay.asubscribe(key) as sub:
            with pytest.raises(RemoteError) as info:
                [e async for e in sub]
        assert (info.value.type, info.value.message) == ("KeyError", "'missing'")
        assert await relay.astatus(key) == "error"

    asyncio.run(go())


async def _failing(emit: Any) -> None:
    emit("before")
    raise KeyError("missing")


def _url(relay: RedisRelay) -> str:
    kwargs = relay._redis_store.sync.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


# -- the async face at scale: one hub, pipelined writes, one lease watcher per loop ---------------


async def _until(check: Any, what: str, within: float = 10) -> None:
    """Poll the relay's own state (it has no event to await) until `check()`."""
    end = time.monotonic() + within
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def _connections(raw: Any, name: str) -> int:
    return sum(1 for c in raw.client_list() if c.get("name") == name)


def test_async_subscribers_share_one_subscribed_connection(redis_server: RedisServer, raw: Any, prefix: str) -> None:
    """150 runs read at once (more than redis-py's default pool of 100): every event arrives, in
    order, through a handful of connections; once the hub is idle, no channel is subscribed."""
    runs, tokens = 150, 5
    name = f"hub-{prefix}"

    async def go() -> None:
        relay = RedisRelay(f"{redis_server.url}?client_name={name}", prefix=prefix, lease=2.0)
        gates = [asyncio.Event() for _ in range(runs)]
        seen: list[list[str]] = []

        def producer(gate: asyncio.Event) -> Any:
            async def produce(emit: Any) -> None:
                for i in range(tokens):
                    await gate.wait()
                    emit(f"t{i}")

            return produce

        async def one(gate: asyncio.Event) -> None:
            key = await relay.areserve()
            async with relay.asubscribe(key) as sub:
                await relay.apublish(callstream.afrom_callback(producer(gate)), key=key)
                seen.append([token async for token in sub.tokens()])

        tasks = [asyncio.ensure_future(one(gate)) for gate in gates]
        hub = relay._redis_store.hub()
        await _until(lambda: sum(len(group) for group in hub.followers.values()) == runs, "every subscriber to wait")
        # the hub's subscribed connection, the leases' BLPOP, and what the pool keeps: not one per run
        assert _connections(raw, name) <= 64 + 2
        await _until(lambda: len(hub.live) == runs, "the hub to be subscribed to every run")
        assert sum(n for _, n in raw.pubsub_numsub(*hub.live)) == runs  # one subscriber each: the hub
        for gate in gates:
            gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert seen == [[f"t{i}" for i in range(tokens)]] * runs
        await _until(lambda: hub.task is None, "the hub to go idle")
        assert raw.pubsub_channels(f"{prefix}:*") == []
        await relay.aclose()

    asyncio.run(go())


def test_a_subscriber_that_joins_a_busy_hub_gets_the_pushes(relay: RedisRelay) -> None:
    """A second run followed while the hub waits for the first one's messages: its token comes
    pushed (no subscriber looks at its run itself: their read slice is longer than the test)."""
    relay._redis_store.read_slice = 60.0

    async def go() -> None:
        idle, gate = asyncio.Event(), asyncio.Event()

        async def never(emit: Any) -> None:
            await idle.wait()

        async def one_token(emit: Any) -> None:
            await gate.wait()
            emit("hello")

        first = await relay.apublish(callstream.afrom_callback(never))
        async with relay.asubscribe(first) as waiting:
            reader = asyncio.ensure_future(anext(aiter(waiting)))
            hub = relay._redis_store.hub()
            await _until(lambda: len(hub.live) == 1, "the hub to follow the first run")
            second = await relay.apublish(callstream.afrom_callback(one_token))
            async with relay.asubscribe(second) as sub:
                tokens = asyncio.ensure_future(sub.tokens().__anext__())
                await _until(lambda: len(hub.live) == 2, "the hub to follow the second run")
                gate.set()
                assert await asyncio.wait_for(tokens, 10) == "hello"
            idle.set()
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(reader, 10)
        await relay.aclose()

    asyncio.run(go())


def test_a_push_the_hub_missed_or_could_not_parse_costs_time_never_an_event(
    relay: RedisRelay, raw: Any, prefix: str
) -> None:
    """The loop's hub hands on what Redis pushes; with a third of the pushes dropped on purpose
    (as if missed) and foreign messages published on the runs' channels, every subscriber still
    gets every event, in order, once: a gap, or a message it cannot read, makes the hub read the
    run's stream (and a subscriber looks itself after a read slice with nothing)."""
    runs, tokens = 20, 30
    dropped = [0]

    async def go() -> None:
        hub = relay._redis_store.hub()
        pushed = hub.pushed

        def lossy(channel: Any, data: Any) -> None:
            dropped[0] += 1
            if dropped[0] % 3:
                pushed(channel, data)
            else:  # missed; and in its place a message no script wrote
                pushed(channel, b"garbage")
                pushed(channel, b"e x\n{}")

        hub.pushed = lossy  # type: ignore[method-assign]

        def producer(i: int) -> Any:
            async def produce(emit: Any) -> None:
                for t in range(tokens):
                    await asyncio.sleep(0.005)
                    emit(f"{i}-{t}")

            return produce

        async def one(i: int) -> list[str | None]:
            key = await relay.areserve()
            async with relay.asubscribe(key) as sub:
                await relay.apublish(callstream.afrom_callback(producer(i)), key=key)
                return [e.text async for e in sub if e.kind == "token"]

        got = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(runs))), 60)
        assert got == [[f"{i}-{t}" for t in range(tokens)] for i in range(runs)]
        assert dropped[0] >= runs * 3  # pushes were missed while the runs went on
        await relay.aclose()

    asyncio.run(go())


def test_a_cancel_from_elsewhere_stops_an_async_producer(
    relay: RedisRelay, redis_server: RedisServer, prefix: str
) -> None:
    """The loop's one lease watcher hears a cancel sent by another relay (another process) at once."""
    other = RedisRelay(redis_server.url, prefix=prefix)

    async def go() -> None:
        started = asyncio.Event()

        async def forever(emit: Any) -> None:
            emit("first")
            started.set()
            await asyncio.Event().wait()

        keys = [await relay.apublish(callstream.afrom_callback(forever)) for _ in range(3)]
        await started.wait()
        await asyncio.sleep(0.1)  # the watcher's BLPOP names them
        other.cancel(keys[1])
        end = time.monotonic() + 5
        while await relay.astatus(keys[1]) != "cancelled" and time.monotonic() < end:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert [await relay.astatus(k) for k in keys] == ["running", "cancelled", "running"]
        for key in (keys[0], keys[2]):
            await relay.acancel(key)
        await relay.aclose()

    asyncio.run(go())
    other.close()


@pytest.mark.parametrize(("protocol", "decode"), [(3, False), (2, True), (3, True)])
def test_pushes_reach_subscribers_whatever_the_clients_protocol(
    redis_server: RedisServer, prefix: str, protocol: int, decode: bool
) -> None:
    """A client of the user's own (RESP3, or replies decoded to `str`): subscribers still get
    every event pushed, in order, once (their read slice is longer than the test: no polling)."""

    async def go() -> None:
        client = redis.asyncio.Redis.from_url(redis_server.url, protocol=protocol, decode_responses=decode)
        relay = RedisRelay(client, prefix=prefix)
        relay._redis_store.read_slice = 60.0
        gates = [asyncio.Event() for _ in range(3)]

        def producer(gate: asyncio.Event) -> Any:
            async def produce(emit: Any) -> None:
                await gate.wait()
                for i in range(20):
                    emit(f"t{i}")
                    await asyncio.sleep(0)

            return produce

        async def one(gate: asyncio.Event) -> list[str]:
            key = await relay.areserve()
            async with relay.asubscribe(key) as sub:
                await relay.apublish(callstream.afrom_callback(producer(gate)), key=key)
                return [token async for token in sub.tokens()]

        tasks = [asyncio.ensure_future(one(gate)) for gate in gates]
        hub = relay._redis_store.hub()
        await _until(lambda: len(hub.live) == len(gates), "the hub to follow every run")
        for gate in gates:
            gate.set()
        got = await asyncio.wait_for(asyncio.gather(*tasks), 20)
        assert got == [[f"t{i}" for i in range(20)]] * len(gates)
        await client.aclose()

    asyncio.run(go())


def test_a_quiet_hub_keeps_its_connection_within_the_socket_timeout(redis_server: RedisServer, prefix: str) -> None:
    """A client with a short socket timeout: the hub's reads wait for pushes, so it pings Redis
    while nothing comes; after several timeouts' worth of quiet the subscriber still gets its
    event pushed (its read slice is longer than the test: no polling)."""

    async def go() -> None:
        client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=0.5)
        relay = RedisRelay(client, prefix=prefix)
        relay._redis_store.read_slice = 60.0
        gate = asyncio.Event()

        async def produce(emit: Any) -> None:
            await gate.wait()
            emit("late")

        key = await relay.apublish(callstream.afrom_callback(produce))
        async with relay.asubscribe(key) as sub:
            token = asyncio.ensure_future(sub.tokens().__anext__())
            hub = relay._redis_store.hub()
            pings = [0]
            ping = hub.ping

            def counted(loop: asyncio.AbstractEventLoop) -> None:
                pings[0] += 1
                ping(loop)

            hub.ping = counted  # type: ignore[method-assign]
            await _until(lambda: len(hub.live) == 1, "the hub to follow the run")
            await _until(lambda: pings[0] >= 8, "two seconds of quiet (four socket timeouts)")
            assert not token.done()
            gate.set()
            assert await asyncio.wait_for(token, 10) == "late"
        await client.aclose()

    asyncio.run(go())


def test_a_run_followed_again_while_its_unsubscribe_is_on_its_way_is_subscribed_again(relay: RedisRelay) -> None:
    """A subscriber leaves a run and another joins it before Redis confirmed the hub's
    `UNSUBSCRIBE` (a client reconnecting): the hub subscribes again, the newcomer gets the next
    event pushed, and the hub ends once it leaves too."""
    from callstream._redis_store import _HubReader

    store = relay._redis_store
    store.read_slice = 60.0  # no subscriber looks at its run itself: only a push delivers

    async def go() -> None:
        gate = asyncio.Event()

        async def produce(emit: Any) -> None:
            await gate.wait()
            emit("late")

        key = await relay.apublish(callstream.afrom_callback(produce))
        hub = store.hub()
        stream = store.keys(key)[1]
        async with relay.asubscribe(key) as first:
            waiting = asyncio.ensure_future(anext(aiter(first)))
            await _until(lambda: stream in hub.live, "the hub to follow the run")
            waiting.cancel()
        for _ in range(1000):  # the loop's next ticks (not a timer's: the confirmation would come first)
            if stream not in hub.sent:
                break
            await asyncio.sleep(0)
        assert stream not in hub.sent  # the hub sent its UNSUBSCRIBE
        assert stream in hub.live  # and Redis has not confirmed it yet (one round trip later)
        second = _HubReader(store, key)
        second.check_at = time.monotonic() + 60  # straight to the hub (its first look at the run was made)
        read = asyncio.ensure_future(second.aread(None, 30.0, 100))
        await _until(lambda: stream in hub.live and stream in hub.sent, "the hub to subscribe again")
        gate.set()
        batch = await asyncio.wait_for(read, 10)
        assert [e.text for e in batch.events] == ["late"]
        second.close()
        await _until(lambda: hub.task is None, "the hub to end")
        await relay.aclose()

    asyncio.run(go())


def test_a_hub_whose_follower_left_before_it_connected_ends(relay: RedisRelay) -> None:
    """A follower that comes and goes in one tick, before the hub holds its connection: the hub
    subscribes nothing, expects no reply, and ends (its connection back to the pool)."""
    from callstream._redis_store import _Follower

    async def go() -> None:
        hub = relay._redis_store.hub()
        follower = _Follower(relay._redis_store.keys("k")[1], (0, 0))
        hub.add(follower)
        hub.remove(follower)
        assert hub.task is not None
        await _until(lambda: hub.task is None, "the hub to end")
        assert hub.sent == set() and hub.unconfirmed == 0
        await relay.aclose()

    asyncio.run(go())


def test_a_user_whose_acl_grants_no_channels_still_publishes_and_subscribes(
    redis_server: RedisServer, raw: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis 7 gives a new ACL user no Pub/Sub channels: the scripts' `PUBLISH` is refused, the
    writes are not; the hub's `SUBSCRIBE` is refused, so its subscribers read their runs instead
    (and the log says what to grant). Every run completes; every event arrives once, in order."""
    user = f"u{uuid.uuid4().hex[:8]}"
    raw.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "+@all", "resetchannels")
    try:
        assert raw.acl_getuser(user)["channels"] == []
        relay = RedisRelay(f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0", prefix=prefix)
        relay._redis_store.read_slice = 60.0  # delivered by the hub's reads, not by the subscribers' own looks

        def producer(i: int) -> Any:
            async def produce(emit: Any) -> None:
                for t in range(10):
                    await asyncio.sleep(0.001)
                    emit(f"{i}-{t}")

            return produce

        async def one(i: int) -> tuple[list[str], str | None]:
            key = await relay.areserve()
            async with relay.asubscribe(key) as sub:
                await relay.apublish(callstream.afrom_callback(producer(i)), key=key)
                got = [token async for token in sub.tokens()]
            return got, await relay.astatus(key)

        async def go() -> list[tuple[list[str], str | None]]:
            try:
                return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(5))), 30)
            finally:
                await relay.aclose()

        with caplog.at_level("WARNING", logger="callstream"):
            got = asyncio.run(go())
        assert got == [([f"{i}-{t}" for t in range(10)], "completed") for i in range(5)]
        assert f"&{prefix}:*" in caplog.text
    finally:
        raw.execute_command("ACL", "DELUSER", user)


def test_a_hub_whose_connection_is_dropped_subscribes_again_and_loses_nothing(relay: RedisRelay, raw: Any) -> None:
    """Redis drops the hub's connection mid-stream (as it does to a subscriber past its output
    buffer limit; here `CLIENT KILL TYPE pubsub`): the hub connects and subscribes again, and each
    subscriber reads what it missed from its run's stream: every event once, in order, no error."""
    store = relay._redis_store
    store.read_slice = 60.0  # no subscriber looks at its run itself
    runs, tokens = 5, 40

    async def go() -> None:
        halfway = [asyncio.Event() for _ in range(runs)]
        resume = asyncio.Event()

        def producer(i: int) -> Any:
            async def produce(emit: Any) -> None:
                for t in range(tokens):
                    if t == tokens // 2:
                        halfway[i].set()
                        await resume.wait()
                    emit(f"{i}-{t}")
                    await asyncio.sleep(0)

            return produce

        async def one(i: int) -> list[str]:
            key = await relay.areserve()
            async with relay.asubscribe(key) as sub:
                await relay.apublish(callstream.afrom_callback(producer(i)), key=key)
                return [token async for token in sub.tokens()]

        tasks = [asyncio.ensure_future(one(i)) for i in range(runs)]
        hub = store.hub()
        for event in halfway:
            await asyncio.wait_for(event.wait(), 10)
        await _until(lambda: len(hub.live) == runs, "the hub to follow every run")
        first = hub.connection
        assert raw.client_kill_filter(_type="pubsub") >= 1
        resume.set()  # the second half is written while the hub has no connection, or a new one
        got = await asyncio.wait_for(asyncio.gather(*tasks), 20)
        assert got == [[f"{i}-{t}" for t in range(tokens)] for i in range(runs)]
        assert hub.connection is not first or hub.task is None
        await relay.aclose()

    asyncio.run(go())


def test_the_stores_packers_write_what_redis_py_writes() -> None:
    """The hot paths pack with hiredis (installed by the extra) or `_pack_python`: the same bytes."""
    import redis.asyncio.connection

    from callstream._redis_store import _pack, _pack_python

    ops: list[tuple[Any, ...]] = [
        ("EVALSHA", "a" * 40, 2, "p:{k}:run", "p:{k}:events", "tok", 10_000, '{"k":"token","t":"é ✓"}', b"\x00\xff"),
        ("XREAD", "COUNT", 256, "BLOCK", 1000, "STREAMS", "p:{k}:events", "p:hub:w", "3-0", "0-0"),
        ("BLPOP", "p:{k}:cancel", "0.600"),
    ]
    expected = b"".join(redis.asyncio.connection.Connection().pack_commands(ops))
    assert _pack_python(ops) == expected
    assert _pack(ops) == expected
