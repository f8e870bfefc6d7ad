"""from_push / afrom_push: the contract, on both faces and every sink (DESIGN.md, "v2: any callback API")."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import callstream
from callstream.sse import sse
from tests.helpers import DelegatingSink, drain_into, run, run_tokens, wait_until


def make(face: str, start: Callable[..., Any], **kw: Any) -> Any:
    return callstream.from_push(start, **kw) if face == "sync" else callstream.afrom_push(start, **kw)


@pytest.fixture
def thread_errors() -> Iterator[list[BaseException]]:
    """Exceptions that reached threading.excepthook (pytest's own hook still runs)."""
    seen: list[BaseException] = []
    previous = threading.excepthook

    def hook(args: Any) -> None:
        seen.append(args.exc_value)
        previous(args)

    threading.excepthook = hook
    yield seen
    threading.excepthook = previous


class SDK:
    """A push-style SDK stand-in: its own thread calls back, separate done/error
    callbacks, and a stop() that must be called to make it stop."""

    def __init__(
        self,
        items: list[Any],
        *,
        end: str = "finish",
        error: BaseException | None = None,
        output: Any = "done",
        forever: bool = False,
    ) -> None:
        self.items = items
        self.end = end
        self.error = error if error is not None else ValueError("sdk failure")
        self.output = output
        self.forever = forever
        self.stop_calls = 0
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.raised: list[BaseException] = []  # anything push raised into the SDK's thread
        self.emitted = 0

    def start(self, push: callstream.Push) -> None:
        push.on_cancel(self.stop)
        self.thread = threading.Thread(target=self._run, args=(push,), name="sdk-thread")
        self.thread.start()

    def stop(self) -> None:
        self.stop_calls += 1
        self.stopped.set()

    def _run(self, push: callstream.Push) -> None:
        try:
            for item in self.items:
                push.emit(item)
                self.emitted += 1
            while self.forever and not self.stopped.is_set():
                push.emit("tick")
                self.emitted += 1
                self.stopped.wait(0.001)
            if self.end == "finish":
                push.finish(self.output)
            elif self.end == "fail":
                push.fail(self.error)
            elif self.end == "hang":
                self.stopped.wait(10)
            # after the end, and after a cancel: every call is a silent no-op
            push.emit("late")
            push.finish("late")
            push.fail(RuntimeError("late"))
        except BaseException as exc:
            self.raised.append(exc)
            raise


ADVERSARIAL = [None, "", "t1", 0, False, b"", "[DONE]", ValueError("data"), StopIteration(), ("__error__", None)]


def test_items_in_order_exactly_once_and_output(face: str, sink: str) -> None:
    sdk = SDK(ADVERSARIAL, output={"answer": 42})
    stream = make(face, sdk.start, sink=sink)
    got = run(face, stream)
    assert len(got) == len(ADVERSARIAL) and all(g is i for g, i in zip(got, ADVERSARIAL))
    assert stream.output == {"answer": 42} and stream.status == "completed"
    assert sdk.stop_calls == 0  # the SDK ended by itself: nothing to stop
    sdk.thread.join(2)  # type: ignore[union-attr]
    assert not sdk.raised


def test_fail_is_raised_as_the_same_object_after_the_items(face: str, sink: str) -> None:
    sdk = SDK(["a", "b", "c"], end="fail")
    got: list[Any] = []
    with pytest.raises(ValueError) as info:
        drain_into(face, make(face, sdk.start, sink=sink), got)
    assert info.value is sdk.error and got == ["a", "b", "c"]
    assert any("3 token(s)" in n for n in getattr(info.value, "__notes__", []))
    assert sdk.stop_calls == 0
    sdk.thread.join(2)  # type: ignore[union-attr]
    assert not sdk.raised


def test_break_runs_the_hook_once_and_later_calls_are_no_ops(
    face: str, sink: str, thread_errors: list[BaseException]
) -> None:
    sdk = SDK([], forever=True)
    stream = make(face, sdk.start, sink=sink)
    seen: list[Any] = []
    got = run(face, stream, lambda item: seen.append(item) or len(seen) < 5)
    assert got == ["tick"] * 5
    assert sdk.stopped.wait(2)
    sdk.thread.join(2)  # type: ignore[union-attr]
    assert not sdk.thread.is_alive()  # type: ignore[union-attr]
    assert sdk.stop_calls == 1 and not sdk.raised and not thread_errors
    assert stream.status == "cancelled"


def test_start_raising_is_the_stream_error_and_its_hooks_run(face: str) -> None:
    boom = KeyError("no such device")
    hook = threading.Event()

    def start(push: callstream.Push) -> None:
        push.on_cancel(hook.set)
        push.emit("before")
        raise boom

    got: list[Any] = []
    with pytest.raises(KeyError) as info:
        drain_into(face, make(face, start), got)
    assert info.value is boom and got == ["before"]
    assert hook.is_set()


def test_sdk_that_never_finishes_ends_with_the_idle_timeout(face: str, sink: str) -> None:
    sdk = SDK(["a", "b"], end="hang")
    got: list[Any] = []
    t0 = time.monotonic()
    with pytest.raises(callstream.StreamTimeout) as info:
        drain_into(face, make(face, sdk.start, sink=sink, idle_timeout=0.2), got)
    assert info.value.limit == "idle_timeout" and got == ["a", "b"]
    assert 0.2 <= time.monotonic() - t0 < 2
    assert sdk.stopped.wait(2) and sdk.stop_calls == 1
    sdk.thread.join(2)  # type: ignore[union-attr]
    assert not sdk.raised


def test_total_and_first_token_timeouts(face: str) -> None:
    for kw, limit in [({"timeout": 0.2}, "timeout"), ({"first_token_timeout": 0.2}, "first_token_timeout")]:
        sdk = SDK([], end="hang")
        with pytest.raises(callstream.StreamTimeout) as info:
            run(face, make(face, sdk.start, **kw))
        assert info.value.limit == limit
        assert sdk.stopped.wait(2) and sdk.stop_calls == 1
        sdk.thread.join(2)  # type: ignore[union-attr]


def test_a_limit_noticed_in_emit_delivers_what_came_before_then_stops_the_sdk(face: str) -> None:
    # The consumer holds back; the producer's own emit notices the total limit.
    in_emit = threading.Event()
    sdk_stop = threading.Event()

    def start(push: callstream.Push) -> None:
        push.on_cancel(sdk_stop.set)

        def run_sdk() -> None:
            push.emit("early")
            time.sleep(0.25)
            in_emit.set()
            push.emit("too late")  # the deadline passed: dropped, hooks run here, no exception
            push.emit("later")

        threading.Thread(target=run_sdk).start()

    stream = make(face, start, timeout=0.2)
    if face == "sync":
        with stream as s:
            assert next(s) == "early"
            assert in_emit.wait(2) and sdk_stop.wait(2)
            with pytest.raises(callstream.StreamTimeout):
                next(s)
    else:

        async def go() -> None:
            async with stream as s:
                assert await s.__anext__() == "early"
                assert await asyncio.to_thread(in_emit.wait, 2)
                assert await asyncio.to_thread(sdk_stop.wait, 2)
                with pytest.raises(callstream.StreamTimeout):
                    await s.__anext__()

        asyncio.run(go())


def test_on_cancel_after_the_cancel_is_called_at_once_and_never_after_finish(face: str) -> None:
    pushes: list[callstream.Push] = []
    stream = make(face, pushes.append)
    if face == "sync":
        with stream as s:
            pushes[0].emit(1)
            assert next(s) == 1
    else:

        async def go() -> None:
            async with stream as s:
                pushes[0].emit(1)
                assert await s.__anext__() == 1

        asyncio.run(go())
    late = threading.Event()
    pushes[0].on_cancel(late.set)
    assert late.is_set() and pushes[0].closed

    finished: list[callstream.Push] = []
    stream2 = make(face, lambda p: (finished.append(p), p.finish("x")))
    assert run(face, stream2) == [] and stream2.output == "x"
    never = threading.Event()
    finished[0].on_cancel(never.set)
    assert not never.is_set()
    with pytest.raises(TypeError):
        finished[0].on_cancel("not callable")  # type: ignore[arg-type]


def test_abandoned_stream_runs_the_hook_when_collected() -> None:
    sdk = SDK([], forever=True)
    stream = callstream.from_push(sdk.start)
    assert next(stream) == "tick"
    del stream
    gc.collect()
    assert sdk.stopped.wait(2) and sdk.stop_calls == 1
    sdk.thread.join(2)  # type: ignore[union-attr]
    assert not sdk.raised


def test_producer_parked_on_a_full_bounded_sink_is_released_silently(face: str) -> None:
    sdk = SDK(list(range(100)), end="finish")
    bounded = callstream.BoundedSink(2)
    stream = make(face, sdk.start, sink=bounded)
    got = run(face, stream, lambda item: (wait_until(lambda: bounded.statistics().producers_waiting == 1), False)[1])
    assert got == [0]
    sdk.thread.join(2)  # type: ignore[union-attr]
    assert not sdk.thread.is_alive() and not sdk.raised  # type: ignore[union-attr]
    assert sdk.stop_calls == 1


def test_overflow_policy_error_ends_the_stream_not_the_sdk_thread(face: str) -> None:
    release = threading.Event()
    sdk = SDK([], end="hang")

    def start(push: callstream.Push) -> None:
        sdk.start(push)
        for i in range(5):  # 2 fit, the third overflows: StreamOverflow is the stream's error
            push.emit(i)
        release.set()

    got: list[Any] = []
    with pytest.raises(callstream.StreamOverflow):
        drain_into(face, make(face, start, sink=callstream.BoundedSink(2, "error")), got)
    assert got == [0, 1] and release.is_set()
    assert sdk.stopped.wait(2) and sdk.stop_calls == 1
    sdk.thread.join(2)  # type: ignore[union-attr]


def test_custom_sink_from_several_threads(face: str) -> None:
    n = 300

    def start(push: callstream.Push) -> None:
        left = [3]
        lock = threading.Lock()

        def producer(k: int) -> None:
            for i in range(n):
                push.emit((k, i))
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    push.finish()

        for k in range(3):
            threading.Thread(target=producer, args=(k,)).start()

    got = run(face, make(face, start, sink=DelegatingSink()))
    assert len(got) == 3 * n
    for k in range(3):
        assert [i for kk, i in got if kk == k] == list(range(n))


def test_tokens_text_summary_and_sse(face: str) -> None:
    def start(push: callstream.Push) -> None:
        def go() -> None:
            for word in ["Hello", "", " push", None, " world"]:
                push.emit(word)
            push.finish("ok")

        threading.Thread(target=go).start()

    assert run_tokens(face, make(face, start)) == ["Hello", " push", " world"]
    stream = make(face, start)
    run(face, stream)
    assert stream.text == "Hello push world" and stream.summary.status == "completed"
    if face == "sync":
        body = b"".join(sse(callstream.from_push(start)))
        assert body.count(b"event: token") == 3 and b"event: done" in body


def test_fail_with_a_class_or_a_non_exception() -> None:
    with pytest.raises(LookupError):
        list(callstream.from_push(lambda p: p.fail(LookupError)))
    with pytest.raises(TypeError, match="takes an exception"):
        list(callstream.from_push(lambda p: p.fail("oops")))  # type: ignore[arg-type]


def test_arguments_checked_at_the_call() -> None:
    async def astart(push: callstream.Push) -> None:
        pass

    with pytest.raises(TypeError, match="afrom_push"):
        callstream.from_push(astart)
    with pytest.raises(TypeError):
        callstream.from_push(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        callstream.from_push(lambda p: None, sink="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        callstream.afrom_push(lambda p: None, idle_timeout=-1)
    # a start that returns an awaitable on the sync face is the stream's error, not a hang
    with pytest.raises(TypeError, match="afrom_push"):
        list(callstream.from_push(lambda p: astart(p)))


def test_never_started_stream_runs_nothing() -> None:
    calls: list[Any] = []
    stream = callstream.from_push(calls.append)
    stream.close()
    assert calls == [] and list(stream) == []


def test_async_start_is_awaited_and_cancelled_if_the_consumer_leaves_first() -> None:
    hook = threading.Event()

    async def go() -> None:
        gate = asyncio.Event()
        started = asyncio.Event()

        async def start(push: callstream.Push) -> None:
            push.on_cancel(hook.set)
            push.emit("connecting")
            started.set()
            await gate.wait()  # never set: the consumer leaves first
            push.emit("unreachable")

        stream = callstream.afrom_push(start)
        async with stream as s:
            assert await s.__anext__() == "connecting"
            await started.wait()
        task = stream._core.worker._task  # type: ignore[attr-defined]  # the awaited start, a task
        assert task is not None
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert task.done()

        async def start_ok(push: callstream.Push) -> None:
            await asyncio.sleep(0)
            asyncio.get_running_loop().call_soon(push.finish, "connected")

        s2 = callstream.afrom_push(start_ok)
        assert [x async for x in s2] == [] and s2.output == "connected"

    asyncio.run(go())
    assert hook.is_set()


def test_emit_on_the_loop_thread_never_blocks_it_and_loses_nothing() -> None:
    """A bounded 'block' sink: loop-thread emits go past the bound; aemit waits for room."""

    async def go() -> None:
        loop = asyncio.get_running_loop()
        sink = callstream.BoundedSink(4)

        def start(push: callstream.Push) -> None:
            for i in range(200):  # all on the loop's thread, before the consumer ran once
                push.emit(i)
            loop.call_soon(push.finish, "ok")

        stream = callstream.afrom_push(start, sink=sink)
        got = []
        async with stream as s:
            async for x in s:
                got.append(x)
        assert got == list(range(200)) and stream.output == "ok"

        peak: list[int] = []
        sink2 = callstream.BoundedSink(4)
        tasks: list[asyncio.Task[None]] = []

        async def astart(push: callstream.Push) -> None:
            async def produce() -> None:
                for i in range(60):
                    await push.aemit(i)
                    peak.append(sink2.statistics().buffered)
                push.finish()

            tasks.append(loop.create_task(produce()))

        got2 = []
        async with callstream.afrom_push(astart, sink=sink2) as s:
            async for x in s:
                got2.append(x)
                await asyncio.sleep(0)
        assert got2 == list(range(60)) and max(peak) <= 4

    asyncio.run(go())


def test_emit_from_an_sdk_loop_thread_with_a_sync_consumer() -> None:
    # The SDK runs its own event loop in a background thread; the consumer is synchronous.
    sink = callstream.BoundedSink(2)
    loop_box: list[asyncio.AbstractEventLoop] = []
    stopped = threading.Event()

    def start(push: callstream.Push) -> None:
        loop = asyncio.new_event_loop()
        loop_box.append(loop)

        async def sdk() -> None:
            for i in range(50):
                push.emit(i)  # never blocks this loop, even though the sink is full
            await asyncio.sleep(0)
            push.finish("sdk done")

        def thread() -> None:
            loop.run_until_complete(sdk())
            loop.close()
            stopped.set()

        threading.Thread(target=thread, name="sdk-loop").start()

    with callstream.from_push(start, sink=sink) as stream:
        got = list(stream)
    assert got == list(range(50)) and stream.output == "sdk done"
    assert stopped.wait(2)


def test_repr_and_closed() -> None:
    box: list[callstream.Push] = []
    stream = callstream.from_push(box.append)
    with stream:
        push = box[0]
        assert "open" in repr(push) and not push.closed
        push.emit("x")
        push.finish()
        assert list(stream) == ["x"]
    assert push.closed and "ended" in repr(push) and "emitted: 1" in repr(push)
