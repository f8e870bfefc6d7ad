"""Relays: publish a run, subscribe from any position, resume, cancel, expire (issues 17, 18).

Every test runs on each relay (`make_relay`, from conftest: `MemoryRelay`, and
`RedisRelay` on a redis-server of the session's own). One body per face where
the face matters: `face` is how the subscriber reads (`subscribe` or
`asubscribe`); publishing with `apublish`/`arun` has tests of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import callstream
from callstream import (
    Event,
    MemoryRelay,
    ProducerLost,
    RelayFull,
    RemoteError,
    StreamGap,
    StreamNotFound,
    StreamTimeout,
)
from callstream.testing import ScriptedChatModel, agent_script
from tests.helpers import Counter, drain_into, wait_until


def subscribe(relay: MemoryRelay, key: str, face: str, **kw: Any) -> Any:
    return relay.subscribe(key, **kw) if face == "sync" else relay.asubscribe(key, **kw)


def read(relay: MemoryRelay, key: str, face: str, **kw: Any) -> tuple[list[Event], Any, BaseException | None]:
    """Every event of one subscription, the subscription, and what it raised."""
    sub = subscribe(relay, key, face, **kw)
    got: list[Event] = []
    try:
        drain_into(face, sub, got)
    except BaseException as exc:  # the tests look at it
        return got, sub, exc
    return got, sub, None


def read_some(relay: MemoryRelay, key: str, face: str, k: int, after: str | None = None) -> list[Event]:
    """The first `k` events of a subscription, which is then closed (a client that left)."""
    sub = subscribe(relay, key, face, after=after)
    got: list[Event] = []
    if face == "sync":
        with sub:
            for event in sub:
                got.append(event)
                if len(got) == k:
                    break
        return got

    async def go() -> None:
        async with sub:
            async for event in sub:
                got.append(event)
                if len(got) == k:
                    break

    asyncio.run(go())
    return got


def published(relay: MemoryRelay, producer: Any, **kw: Any) -> str:
    return relay.publish(callstream.from_callback(producer, **kw))


def finished(relay: MemoryRelay, key: str) -> None:
    wait_until(lambda: relay.status(key) not in ("queued", "running"), what="the run to end")


def texts(events: list[Event]) -> list[str]:
    return [e.text for e in events]


def assert_raised(relay: Any, got: BaseException | None, original: BaseException) -> None:
    """A subscriber's error: the producer's own object in its process, its type and message across processes."""
    if isinstance(relay, MemoryRelay):
        assert got is original
    else:
        assert isinstance(got, RemoteError), got
        assert (got.type, got.message) == (type(original).__name__, str(original))


def kept(relay: Any, key: str) -> int:
    """How many events the relay keeps for the run."""
    if isinstance(relay, MemoryRelay):
        return len(relay._memory._runs[key].events)
    store = relay._redis_store
    return int(store.sync.xlen(store.keys(key)[1])) - 1  # less the run's end entry


# -- publish and read ----------------------------------------------------------------------


def test_a_run_finished_before_anyone_subscribed_replays_in_full(face: str, make_relay: Any) -> None:
    relay = make_relay()
    key = published(relay, Counter(5))
    finished(relay, key)
    events, sub, error = read(relay, key, face)
    assert error is None
    assert texts(events) == ["t0", "t1", "t2", "t3", "t4"]
    assert [e.id for e in events] == ["1", "2", "3", "4", "5"]
    assert all(e.kind == "token" for e in events)
    assert sub.output == "done" and sub.status == "completed" and sub.text == "t0t1t2t3t4"
    assert sub.summary.status == "completed" and sub.summary.tokens == 5
    assert relay.status(key) == "completed"


def test_subscribers_follow_a_live_run_and_three_see_the_same_events(face: str, make_relay: Any) -> None:
    relay = make_relay()
    producer = Counter(6, stall_after=3)
    key = published(relay, producer)
    assert producer.stalled.wait(5)
    results: list[list[Event]] = [[], [], []]
    readers = [threading.Thread(target=drain_into, args=(face, subscribe(relay, key, face), got)) for got in results]
    for reader in readers:
        reader.start()
    wait_until(lambda: all(len(got) == 3 for got in results), what="three subscribers at the stall")
    assert relay.status(key) == "running"
    producer.release.set()
    for reader in readers:
        reader.join(5)
    assert [texts(got) for got in results] == [[f"t{i}" for i in range(6)]] * 3
    assert results[0] == results[1] == results[2]


def test_ids_strictly_increase_and_resume_right_after_an_id(face: str, make_relay: Any) -> None:
    relay = make_relay()
    key = published(relay, Counter(8))
    finished(relay, key)
    first = read_some(relay, key, face, 3)
    assert texts(first) == ["t0", "t1", "t2"]
    rest, sub, error = read(relay, key, face, after=first[-1].id)
    assert error is None and sub.output == "done"
    assert texts(first + rest) == [f"t{i}" for i in range(8)]
    ids = [int(e.id) for e in first + rest]
    assert ids == sorted(set(ids))
    tail, sub, _ = read(relay, key, face, after=rest[-1].id)
    assert tail == [] and sub.status == "completed" and sub.output == "done"


def test_items_that_are_not_events_become_events(make_relay: Any) -> None:
    relay = make_relay()
    obj = {"n": 1}

    def producer(emit: Any) -> None:
        emit("a")
        emit(obj)
        emit(Event("custom", name="progress", data={"p": 1}))

    key = published(relay, producer)
    finished(relay, key)
    events, _, _ = read(relay, key, "sync")
    assert [(e.kind, e.name) for e in events] == [("token", ""), ("custom", "item"), ("custom", "progress")]
    assert events[1].data["value"] == obj and events[0].text == "a" and events[2].data == {"p": 1}
    if isinstance(relay, MemoryRelay):
        assert events[1].data["value"] is obj


def test_an_agent_subscription_has_the_runs_answer_summary_and_output(face: str, make_relay: Any) -> None:
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    model = ScriptedChatModel(
        respond=agent_script(tool="add", args={"a": 2, "b": 3}, answer="It is {result}.", preamble="Let me add. "),
        chunk_size=2,
    )
    agent = create_agent(model, tools=[add])
    relay = make_relay()
    direct = callstream.iter_callbacks(agent, {"messages": [("user", "2+3?")]})
    expected = "".join(direct.tokens(answer_only=True))
    key = relay.publish(callstream.iter_callbacks(agent, {"messages": [("user", "2+3?")]}))
    finished(relay, key)
    sub = subscribe(relay, key, face)
    if face == "sync":
        answer = "".join(sub.tokens(answer_only=True))
    else:

        async def go() -> str:
            return "".join([t async for t in sub.tokens(answer_only=True)])

        answer = asyncio.run(go())
    assert answer == expected == "It is 5."
    assert [(c.name, c.args, c.result.content) for c in sub.summary.tool_calls] == [("add", {"a": 2, "b": 3}, "5")]
    assert sub.summary.llm_calls == 2
    assert sub.output["messages"][-1].content == "It is 5."


# -- bad input ---------------------------------------------------------------------------------


def test_unknown_keys_gaps_and_bad_arguments_are_clear(face: str, make_relay: Any) -> None:
    relay = make_relay(maxlen=3)
    with pytest.raises(StreamNotFound) as info:
        subscribe(relay, "nope-not-a-key", face)
    assert isinstance(info.value, KeyError) and "never published here" in str(info.value)
    assert "nope-not-a-key" not in str(info.value)  # keys are secrets: shown shortened
    # Redis trims whole stream nodes (MAXLEN ~, 100 entries a node): 250 events trim the first 200 there
    n = 5 if isinstance(relay, MemoryRelay) else 250
    key = published(relay, Counter(n))
    finished(relay, key)
    for after in ("x", "-1", "1e3", "", "1" * 19, str(n + 1), "99999", "1"):  # malformed, never issued, trimmed
        with pytest.raises(StreamGap):
            subscribe(relay, key, face, after=after)
    with pytest.raises(StreamGap, match="no longer kept"):
        subscribe(relay, key, face)  # the first events are gone: never a silent loss
    events, _, error = read(relay, key, face, after=str(n - 3))
    assert error is None and texts(events) == [f"t{i}" for i in range(n - 3, n)]
    with pytest.raises(TypeError, match="after must be an event id"):
        subscribe(relay, key, face, after=2)
    for bad in ("", "a b", "x" * 201, "tab\t"):
        with pytest.raises(ValueError, match="printable"):
            relay.status(bad)
    with pytest.raises(ValueError, match="timeout"):
        subscribe(relay, key, face, timeout=-1)
    assert relay.status("unknown") is None


def test_asubscribe_on_a_loop_never_asks_redis_with_the_loop_blocked(
    make_relay: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A thousand clients subscribing at once must not stop the loop for a round trip each:
    # a RedisRelay called from a coroutine checks only the syntax of the key and of `after` at
    # the call, the rest at the first read (awaited); `astatus` answers an unknown key first. A
    # MemoryRelay asks nothing over the network: it checks everything at the call, as `subscribe`.
    relay = make_relay()
    key = published(relay, Counter(3))
    finished(relay, key)
    store, blocking = relay._store, []
    read = store.read

    def watched_read(*args: Any) -> Any:
        try:
            asyncio.get_running_loop()
            blocking.append(args)
        except RuntimeError:
            pass
        return read(*args)

    monkeypatch.setattr(store, "read", watched_read)

    async def go() -> list[Any]:
        outcomes: list[Any] = [await relay.astatus("nope-not-a-key"), await relay.astatus(key)]
        for bad_key, after in (("nope-not-a-key", None), (key, "x"), (key, "99")):
            try:
                sub = relay.asubscribe(bad_key, after=after)
            except (StreamNotFound, StreamGap) as exc:
                outcomes.append(("at the call", type(exc)))
                continue
            with pytest.raises((StreamNotFound, StreamGap)) as info:
                async with sub:
                    async for _ in sub:
                        pass
            outcomes.append(("at the first read", info.type))
        with pytest.raises(ValueError, match="printable"):
            relay.asubscribe("a b")  # syntax: at the call, on every relay
        async with relay.asubscribe(key, after="1") as sub:
            outcomes.append([e.text async for e in sub])
        return outcomes

    memory = isinstance(relay, MemoryRelay)
    where = "at the call" if memory else "at the first read"
    assert asyncio.run(go()) == [
        None,
        "completed",
        (where, StreamNotFound),
        ("at the call", StreamGap),  # "x": no relay ever issues it
        (where, StreamGap),  # "99": not issued yet
        ["t1", "t2"],
    ]
    # the blocking reads made on the loop: the memory relay's (no I/O), never Redis's
    assert len(blocking) == (4 if memory else 0)


def test_publish_checks_the_stream_and_the_key(make_relay: Any) -> None:
    relay = make_relay()
    with pytest.raises(TypeError, match="apublish"):
        relay.publish(callstream.afrom_callback(Counter(1)))
    with pytest.raises(TypeError, match="takes a Stream"):
        relay.publish(["a"])
    stream = callstream.from_callback(Counter(1))
    list(stream)
    with pytest.raises(ValueError, match="unstarted"):
        relay.publish(stream)
    key = published(relay, Counter(1), sink="deque")
    finished(relay, key)
    with pytest.raises(ValueError, match="already published"):
        relay.publish(callstream.from_callback(Counter(1)), key=key)
    assert len(relay.reserve()) == 22  # secrets.token_urlsafe(16): 128 bits


# -- how runs end ------------------------------------------------------------------------------


def test_an_error_reaches_every_subscriber_after_every_event_before_it(face: str, make_relay: Any) -> None:
    relay = make_relay()
    producer = Counter(5, fail_after=3)
    key = published(relay, producer)
    finished(relay, key)
    for _ in range(2):
        events, sub, error = read(relay, key, face)
        assert texts(events) == ["t0", "t1", "t2"]
        assert_raised(relay, error, producer.error)
        assert sub.status == "error"
    assert relay.status(key) == "error"


def test_run_returns_the_summary_and_re_raises_the_error(make_relay: Any) -> None:
    relay = make_relay()
    summary = relay.run(callstream.from_callback(Counter(3)), key="job-1")
    assert summary.status == "completed" and summary.tokens == 3
    producer = Counter(3, fail_after=1)
    with pytest.raises(ValueError) as info:
        relay.run(callstream.from_callback(producer), key="job-2")
    assert info.value is producer.error and relay.status("job-2") == "error"
    events, _, error = read(relay, "job-2", "sync")
    assert texts(events) == ["t0"]
    assert_raised(relay, error, producer.error)


def test_a_run_timeout_is_its_outcome_and_a_subscription_timeout_only_ends_the_subscription(
    face: str, make_relay: Any
) -> None:
    relay = make_relay()
    producer = Counter(4, stall_after=2)
    key = published(relay, producer)
    assert producer.stalled.wait(5)
    idle = 0.05 if isinstance(relay, MemoryRelay) else 0.5  # over Redis: a first connection in a new loop
    events, _, error = read(relay, key, face, idle_timeout=idle)
    assert texts(events) == ["t0", "t1"] and isinstance(error, StreamTimeout)
    assert relay.status(key) == "running"  # the run goes on
    producer.release.set()
    finished(relay, key)
    assert relay.status(key) == "completed"

    slow = Counter(4, stall_after=1)
    key = published(relay, slow, idle_timeout=0.05)
    assert slow.stalled.wait(5)
    finished(relay, key)
    slow.release.set()
    events, _, error = read(relay, key, face)
    assert relay.status(key) == "timeout" and isinstance(error, StreamTimeout) and texts(events) == ["t0"]


def test_cancel_from_a_subscriber_stops_the_run(face: str, make_relay: Any) -> None:
    relay = make_relay()
    producer = Counter(1000, stall_after=2)
    key = published(relay, producer)
    assert producer.stalled.wait(5)
    got: list[Event] = []
    reader = threading.Thread(target=drain_into, args=(face, subscribe(relay, key, face), got))
    reader.start()
    wait_until(lambda: len(got) == 2, what="the subscriber to read up to the stall")
    relay.cancel(key)
    relay.cancel(key)  # idempotent
    producer.release.set()
    reader.join(5)
    assert not reader.is_alive() and texts(got) == ["t0", "t1"]
    assert producer.finished.wait(5) and producer.count <= 3
    assert relay.status(key) == "cancelled"
    events, sub, error = read(relay, key, face)
    assert error is None and texts(events) == ["t0", "t1"] and sub.status == "cancelled"
    with pytest.raises(StreamNotFound):
        relay.cancel("unknown-key")


def test_a_cancel_between_publish_and_the_start_ends_cancelled_not_in_error(make_relay: Any) -> None:
    relay = make_relay()
    store = relay._store
    hold = store.hold
    cancelled = threading.Event()

    @contextlib.contextmanager
    def late(key: str, stop: Any) -> Iterator[None]:  # the pump, held between `begin` and the start
        cancelled.wait(5)
        with hold(key, stop):
            yield

    store.hold = late
    producer = Counter(3)
    key = published(relay, producer)
    relay.cancel(key)
    cancelled.set()
    finished(relay, key)
    assert relay.status(key) == "cancelled" and not producer.started.is_set()
    events, sub, error = read(relay, key, "sync")
    assert events == [] and error is None and sub.status == "cancelled"


def test_a_langgraph_interrupt_ends_interrupted_and_the_resume_is_a_new_run(face: str, make_relay: Any) -> None:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, interrupt
    from typing_extensions import TypedDict

    class State(TypedDict):
        answer: str

    def ask(state: State) -> dict[str, str]:
        return {"answer": str(interrupt("Send it?"))}

    graph = StateGraph(State)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    app = graph.compile(checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "t1"}}
    relay = make_relay()
    key = relay.publish(callstream.iter_callbacks(app, {"answer": ""}, config))
    finished(relay, key)
    assert relay.status(key) == "interrupted"
    events, sub, error = read(relay, key, face)
    assert error is None and sub.status == "interrupted"
    assert [e.kind for e in events].count("interrupt") == 1
    assert sub.output["__interrupt__"][0].value == "Send it?"
    resumed = relay.publish(callstream.iter_callbacks(app, Command(resume="yes"), config))
    assert resumed != key
    finished(relay, resumed)
    _, sub, _ = read(relay, resumed, face)
    assert sub.status == "completed" and sub.output == {"answer": "yes"}


# -- reserved keys, attempts ---------------------------------------------------------------------


def test_a_reserved_key_is_queued_and_subscribers_wait_for_its_run(face: str, make_relay: Any) -> None:
    relay = make_relay()
    key = relay.reserve()
    assert relay.status(key) == "queued"
    got: list[Event] = []
    sub = subscribe(relay, key, face)  # no StreamNotFound: it waits
    reader = threading.Thread(target=drain_into, args=(face, sub, got))
    reader.start()
    wait_until(lambda: sub._core.statistics().consumers_waiting > 0 or face == "async", what="a waiting reader")
    summary = relay.run(callstream.from_callback(Counter(3)), key=key)
    reader.join(5)
    assert summary.status == "completed" and texts(got) == ["t0", "t1", "t2"] and sub.output == "done"
    with pytest.raises(ValueError, match="already published"):
        relay.run(callstream.from_callback(Counter(1)), key=key)


def test_a_reserved_key_cancelled_before_its_start_never_runs_the_model(make_relay: Any) -> None:
    relay = make_relay()
    key = relay.reserve()
    relay.cancel(key)
    assert relay.status(key) == "cancelled"
    producer = Counter(3)
    summary = relay.run(callstream.from_callback(producer), key=key)
    assert summary.status == "cancelled" and not producer.started.is_set()
    events, sub, error = read(relay, key, "sync")
    assert events == [] and error is None and sub.status == "cancelled"


def test_a_reserved_key_nobody_starts_ends_lost(face: str, make_relay: Any) -> None:
    relay = make_relay(queue_timeout=0.05)
    key = relay.reserve()
    events, _, error = read(relay, key, face)
    assert events == [] and isinstance(error, ProducerLost) and "queue_timeout" in str(error)
    assert relay.status(key) == "lost"


def test_a_retry_under_the_same_key_is_a_new_attempt(face: str, make_relay: Any) -> None:
    relay = make_relay()
    first = Counter(3, fail_after=2)
    with pytest.raises(ValueError):
        relay.run(callstream.from_callback(first), key="task-7")
    relay.run(callstream.from_callback(Counter(2)), key="task-7")
    events, sub, error = read(relay, "task-7", face)
    assert error is None and sub.output == "done"
    assert [(e.kind, e.text) for e in events] == [
        ("token", "t0"),
        ("token", "t1"),
        ("attempt", ""),
        ("token", "t0"),
        ("token", "t1"),
    ]
    assert events[2].data == {"attempt": 2, "previous": {"status": "error", "error": "ValueError: scripted failure"}}
    assert [int(e.id) for e in events] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="already published"):  # completed: no third run
        relay.run(callstream.from_callback(Counter(1)), key="task-7")


# -- memory, expiry, linger ------------------------------------------------------------------------


def test_max_runs_and_ttl_bound_what_is_kept(relay_kind: str) -> None:
    if relay_kind == "redis":
        pytest.skip("a clock of the test's own: MemoryRelay only (RedisRelay: test_redis_relay.py, real time)")
    relay = MemoryRelay(max_runs=2, ttl=60)
    clock = [1000.0]
    relay._memory.clock = lambda: clock[0]
    a = relay.run(callstream.from_callback(Counter(1)), key="a")
    assert a.status == "completed"
    relay.reserve("b")
    with pytest.raises(RelayFull, match="max_runs=2"):
        relay.reserve("c")
    clock[0] += 59
    assert relay.status("a") == "completed"
    clock[0] += 1
    assert relay.status("a") is None  # expired: released
    with pytest.raises(StreamNotFound):
        relay.subscribe("a")
    relay.reserve("c")
    assert "2 queued" in repr(relay)


def test_a_subscriber_that_stops_reading_neither_slows_the_run_nor_grows_memory(make_relay: Any) -> None:
    relay = make_relay(maxlen=5000)
    producer = Counter(20_000, stall_after=1)
    sub = relay.subscribe(key := published(relay, producer))
    with sub:
        first = next(iter(sub))  # then stop reading
        producer.release.set()
        finished(relay, key)  # the run ended without waiting for us
        assert relay.status(key) == "completed"
        assert sub.statistics().buffered <= 2 * 1024
    assert first.text == "t0"
    assert 5000 <= kept(relay, key) <= (5000 if isinstance(relay, MemoryRelay) else 5100)
    with pytest.raises(StreamGap):  # fell more than maxlen behind: said, not skipped
        list(relay.subscribe(key, after=first.id))


def test_linger_cancels_a_run_nobody_watches_and_keeps_one_that_is_watched(make_relay: Any, relay_kind: str) -> None:
    # over Redis the subscriber's first read (a connection, a round trip) must come before linger
    linger = 0.05 if relay_kind == "memory" else 0.5
    relay = make_relay(linger=linger)
    producer = Counter(10, stall_after=1)
    key = published(relay, producer)
    assert producer.stalled.wait(5)
    wait_until(lambda: relay.status(key) == "cancelled", what="linger to cancel the unwatched run")
    producer.release.set()
    assert producer.finished.wait(5)

    watched = Counter(3, stall_after=1)
    key = published(relay, watched)
    got: list[Event] = []
    reader = threading.Thread(target=drain_into, args=("sync", relay.subscribe(key), got))
    reader.start()
    assert watched.stalled.wait(5)
    wait_until(lambda: len(got) == 1, what="the subscriber")
    threading.Event().wait(3 * linger)  # longer than linger, with a subscriber: the run must go on
    assert relay.status(key) == "running"
    watched.release.set()
    reader.join(5)
    assert relay.status(key) == "completed" and texts(got) == ["t0", "t1", "t2"]


def test_without_linger_a_run_goes_on_when_its_subscribers_leave(face: str, make_relay: Any) -> None:
    relay = make_relay()
    producer = Counter(5, stall_after=2)
    key = published(relay, producer)
    assert producer.stalled.wait(5)
    assert texts(read_some(relay, key, face, 1)) == ["t0"]
    producer.release.set()
    finished(relay, key)
    assert relay.status(key) == "completed"


# -- the async publisher -------------------------------------------------------------------------


def test_apublish_and_arun_run_on_the_loop(make_relay: Any) -> None:
    relay = make_relay()

    async def producer(emit: Any) -> str:
        for i in range(3):
            await asyncio.sleep(0)
            emit(f"a{i}")
        return "async done"

    async def go() -> None:
        with pytest.raises(TypeError, match=r"relay\.publish"):
            await relay.apublish(callstream.from_callback(Counter(1)))
        key = await relay.apublish(callstream.afrom_callback(producer))
        async with relay.asubscribe(key) as sub:
            got = [e.text async for e in sub]
        assert got == ["a0", "a1", "a2"] and sub.output == "async done"
        summary = await relay.arun(callstream.afrom_callback(producer), key="k")
        assert summary.status == "completed" and relay.status("k") == "completed"

    asyncio.run(go())
