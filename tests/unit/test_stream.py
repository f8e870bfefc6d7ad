"""The bridge itself: one test body per behaviour, over both faces and every sink."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import threading
import time
import traceback
from typing import Any

import pytest

import callstream
from callstream.sinks import Cancelled, SinkName
from tests.conftest import wait_for_no_workers
from tests.helpers import Counter, DelegatingSink, consumer_waiting, make, run, run_tokens, wait_until


class AlwaysEqual:
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


AWKWARD = [
    None,
    "",
    "[DONE]",
    0,
    False,
    b"",
    AlwaysEqual(),
    ValueError("x"),
    StopIteration(),
    ("__error__", KeyError()),
]


# -- order, identity, output ------------------------------------------------


def test_items_in_order_identical_with_output(face: str, sink: str) -> None:
    items = [*AWKWARD, *(f"t{i}" for i in range(300))]

    def producer(emit: Any) -> str:
        for item in items:
            emit(item)
        return "result"

    stream = make(face, producer, sink=sink)
    got = run(face, stream)
    assert len(got) == len(items)
    assert all(a is b for a, b in zip(got, items))  # F07, F28: data, never a marker
    assert stream.output == "result"
    assert stream.status == "completed"
    assert stream.text == "[DONE]" + "".join(f"t{i}" for i in range(300))


def test_tokens_skip_empty_and_non_str(face: str, sink: str) -> None:
    def producer(emit: Any) -> None:
        for item in ["a", "", None, 3, " b", "\n"]:
            emit(item)

    stream = make(face, producer, sink=sink)
    assert run_tokens(face, stream) == ["a", " b", "\n"]
    assert stream.text == "a b\n"


def test_iterating_after_end_yields_nothing(face: str) -> None:
    stream = make(face, Counter(3))
    assert len(run(face, stream)) == 3
    if face == "sync":
        assert list(stream) == []
        with pytest.raises(StopIteration):
            next(stream)
    else:

        async def again() -> list[Any]:
            return [x async for x in stream]

        assert asyncio.run(again()) == []


# -- errors -------------------------------------------------------------------


def test_producer_error_same_object_after_prefix(face: str, sink: str) -> None:
    counter = Counter(10, fail_after=3)  # F01
    stream = make(face, counter, sink=sink)
    got: list[Any] = []
    with pytest.raises(ValueError) as info:
        run(face, stream, got.append)
    assert info.value is counter.error
    assert got == ["t0", "t1", "t2"]
    assert stream.text == "t0t1t2"
    assert stream.status == "error"
    frames = [f.f_code.co_name for f, _ in traceback.walk_tb(info.value.__traceback__)]
    assert "__call__" in frames  # the producer's frame is in the traceback
    assert any("after 3 token(s) were delivered" in n for n in info.value.__notes__)
    with pytest.raises(RuntimeError, match="status 'error'"):
        _ = stream.output
    assert counter.finished.wait(2)


def test_error_before_first_item_is_prompt(face: str) -> None:
    counter = Counter(5, fail_after=0)  # F02: raised on the first next(), no wait
    t0 = time.monotonic()
    with pytest.raises(ValueError):
        run(face, make(face, counter, first_token_timeout=30))
    assert time.monotonic() - t0 < 1.0


class CustomBase(BaseException):
    pass


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt, asyncio.CancelledError, GeneratorExit, CustomBase])
def test_base_exceptions_reach_consumer(face: str, sink: str, exc_type: type[BaseException]) -> None:
    error = exc_type()  # F03
    counter = Counter(5, fail_after=2, error=error)
    stream = make(face, counter, sink=sink)
    got: list[Any] = []
    with pytest.raises(exc_type) as info:
        run(face, stream, got.append)
    assert info.value is error
    assert got == ["t0", "t1"]


def test_failing_sink_error_reaches_consumer(face: str) -> None:
    boom = OSError("sink broke")  # F27

    class FailingSink(DelegatingSink):
        n = 0

        def put(self, item: Any) -> None:
            self.n += 1
            if self.n == 3:
                raise boom
            self.inner.put(item)

    s = FailingSink()
    stream = make(face, Counter(10), sink=s)
    with pytest.raises(OSError) as info:
        run(face, stream)
    assert info.value is boom
    stream.close()


def test_consumer_exception_propagates_and_cancels(face: str, sink: str) -> None:
    counter = Counter(10_000, delay=0.001)  # F08
    stream = make(face, counter, sink=sink)

    def body(item: Any) -> None:
        raise KeyError("consumer")

    with pytest.raises(KeyError, match="consumer"):
        run(face, stream, body)
    assert counter.finished.wait(2)
    assert counter.count < 10_000


def test_consumer_exception_gets_note_of_pending_producer_error() -> None:
    counter = Counter(5, fail_after=1)
    with pytest.raises(KeyError) as info:
        with callstream.from_callback(counter) as stream:
            next(stream)
            assert counter.finished.wait(2)
            raise KeyError("mine")
    assert any("scripted failure" in n for n in info.value.__notes__)


# -- cancellation -------------------------------------------------------------


def test_break_stops_producer_promptly(face: str, sink: str) -> None:
    counter = Counter(100_000, delay=0.0005)  # F09
    stream = make(face, counter, sink=sink)
    got = run(face, stream, lambda item: item != "t5" and None)
    assert got[-1] == "t5"
    t_exit = time.monotonic()
    assert counter.finished.wait(2)
    assert counter.finished_at - t_exit < 0.1
    count = counter.count
    assert stream.status == "cancelled"
    wait_for_no_workers()  # the worker has ended: nothing can emit any more
    assert counter.count == count


def test_close_is_idempotent_and_before_start_never_runs(face: str) -> None:
    counter = Counter(5)  # F10, F22
    stream = make(face, counter)
    stream.close()
    stream.close()
    with pytest.raises(RuntimeError, match="closed"):
        run(face, stream)
    if face == "sync":
        assert list(stream) == []
    assert not counter.started.is_set()


def test_close_right_after_enter(face: str) -> None:
    counter = Counter(1000, delay=0.001)

    if face == "sync":
        with callstream.from_callback(counter) as s:
            s.close()
            assert list(s) == []
    else:

        async def go() -> None:
            async with callstream.afrom_callback(counter) as s:
                await s.aclose()
                assert [x async for x in s] == []

        asyncio.run(go())
    if counter.started.is_set():
        assert counter.finished.wait(2)


def test_second_enter_raises(face: str) -> None:
    if face == "sync":
        with callstream.from_callback(Counter(1)) as s:
            with pytest.raises(RuntimeError, match="more than once"):
                s.__enter__()
        with pytest.raises(RuntimeError, match="closed"):
            s.__enter__()
    else:

        async def go() -> None:
            async with callstream.afrom_callback(Counter(1)) as s:
                with pytest.raises(RuntimeError, match="more than once"):
                    await s.__aenter__()
            with pytest.raises(RuntimeError, match="closed"):
                await s.__aenter__()

        asyncio.run(go())


def test_abandoned_stream_cancelled_by_refcount(sink: SinkName) -> None:
    counter = Counter(100_000, delay=0.0005)  # F11
    stream = callstream.from_callback(counter, sink=sink)
    next(stream)
    del stream
    assert counter.finished.wait(2)


def test_abandoned_stream_in_cycle_cancelled_by_gc() -> None:
    counter = Counter(100_000, delay=0.0005)
    gc.disable()
    try:
        stream = callstream.from_callback(counter)
        next(stream)
        holder: dict[str, Any] = {"s": stream}
        holder["self"] = holder
        del stream, holder
        assert not counter.finished.wait(0.05)
    finally:
        gc.enable()
    gc.collect()
    assert counter.finished.wait(2)


def test_abandoned_stream_collected_in_another_thread() -> None:
    counter = Counter(100_000, delay=0.0005)
    box = [callstream.from_callback(counter)]
    next(box[0])
    t = threading.Thread(target=box.clear)
    t.start()
    t.join()
    assert counter.finished.wait(2)


def test_unstarted_tokens_generator_dropped_never_runs() -> None:
    counter = Counter(5)
    gen = callstream.from_callback(counter).tokens()
    del gen
    gc.collect()
    assert not counter.started.is_set()


def test_close_from_other_thread_wakes_consumer(face: str, sink: str) -> None:
    counter = Counter(10, stall_after=1)  # F13: documented as end of stream
    stream = make(face, counter, sink=sink)
    got: list[Any] = []

    def closer() -> None:
        counter.stalled.wait(5)
        wait_until(lambda: consumer_waiting(stream), what="the consumer waiting in next()")
        stream.close()

    t = threading.Thread(target=closer)
    t.start()
    t0 = time.monotonic()
    got = run(face, stream)
    t.join()
    counter.release.set()
    assert got == ["t0"]
    assert time.monotonic() - t0 < 2
    assert counter.finished.wait(2)


def test_generator_exit_through_web_wrapper(sink: SinkName) -> None:
    counter = Counter(100_000, delay=0.0005)  # F15

    def body() -> Any:
        with callstream.from_callback(counter, sink=sink) as s:
            for t in s.tokens():
                yield f"data: {t}\n\n"

    gen = body()
    assert next(gen) == "data: t0\n\n"
    next(gen)
    gen.close()
    assert counter.finished.wait(2)


def test_close_inside_emit_no_self_join() -> None:
    box: list[Any] = []

    def producer(emit: Any) -> None:
        emit("a")
        box[0].close()  # F41: closing from the producer's own thread
        emit("b")

    stream = callstream.from_callback(producer)
    box.append(stream)
    with stream:
        got = list(stream)
    assert got in (["a"], [])
    assert stream.status == "cancelled"


def test_blocked_producer_released_by_close(face: str) -> None:
    counter = Counter(100)  # F23
    bounded = callstream.BoundedSink(2)
    stream = make(face, counter, sink=bounded)
    if face == "sync":
        with stream as s:
            next(s)
            wait_until(lambda: bounded.statistics().producers_waiting == 1, what="producer parked")
    else:

        async def go() -> None:
            async with stream as s:
                await s.__anext__()
                wait_until(lambda: bounded.statistics().producers_waiting == 1, what="producer parked")

        asyncio.run(go())
    assert counter.finished.wait(2)
    assert bounded.statistics().producers_waiting == 0


def test_puts_after_close_rejected_and_buffer_freed(sink: SinkName) -> None:
    import weakref

    class Big:
        pass

    refs: list[weakref.ref[Big]] = []
    release = threading.Event()
    rejected = threading.Event()

    def producer(emit: Any) -> None:
        for _ in range(50):
            b = Big()
            refs.append(weakref.ref(b))
            emit(b)
        release.wait(5)
        try:
            emit(Big())
        except Cancelled:
            rejected.set()
            raise

    kind = sink if sink != "bounded" else callstream.BoundedSink(100)
    with callstream.from_callback(producer, sink=kind) as s:
        next(s)
        wait_until(lambda: len(refs) == 50)
    release.set()
    assert rejected.wait(2)
    gc.collect()
    assert sum(r() is not None for r in refs) == 0  # F24, F29


# -- timeouts -----------------------------------------------------------------


@pytest.mark.parametrize("limit", ["timeout", "first_token_timeout", "idle_timeout"])
def test_timeouts_raise_promptly_and_stop_producer(face: str, sink: str, limit: str) -> None:
    stall_after = 0 if limit == "first_token_timeout" else 2
    counter = Counter(10, stall_after=stall_after)
    stream = make(face, counter, sink=sink, **{limit: 0.2})
    got: list[Any] = []
    t0 = time.monotonic()
    with pytest.raises(callstream.StreamTimeout) as info:
        run(face, stream, got.append)
    elapsed = time.monotonic() - t0
    assert info.value.limit == limit
    assert isinstance(info.value, TimeoutError)
    assert 0.2 <= elapsed < 0.35
    assert got == [f"t{i}" for i in range(stall_after)]
    assert stream.status == "timeout"
    counter.release.set()
    assert counter.finished.wait(2)
    assert counter.count == stall_after  # stopped at its next emit


def test_idle_is_producer_gaps_not_consumer_pace(face: str) -> None:
    counter = Counter(20)  # F31
    stream = make(face, counter, idle_timeout=0.1)

    def slow(item: Any) -> None:
        time.sleep(0.02)

    assert len(run(face, stream, slow)) == 20


def test_idle_not_hit_while_producer_blocked_on_full_sink() -> None:
    counter = Counter(6)
    with callstream.from_callback(counter, sink=callstream.BoundedSink(1), idle_timeout=0.1) as s:
        got = []
        for item in s:
            got.append(item)
            time.sleep(0.15)
    assert len(got) == 6


def test_timeout_while_nobody_pulls_stops_producer() -> None:
    counter = Counter(1000, delay=0.01)  # F33: documented: raised on the next pull
    with callstream.from_callback(counter, timeout=0.2) as s:
        assert counter.finished.wait(1)
        assert counter.finished_at - counter_start(counter) < 0.35
        with pytest.raises(callstream.StreamTimeout):
            for _ in s:
                pass


def counter_start(counter: Counter) -> float:
    return counter.finished_at - counter.count * counter.delay


def test_wall_clock_jump_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counter(5, delay=0.01)
    real = time.time
    with callstream.from_callback(counter, timeout=5) as s:
        monkeypatch.setattr(time, "time", lambda: real() + 3600)
        assert len(list(s)) == 5


def test_error_at_deadline_exactly_one_outcome() -> None:
    # F32: whichever outcome is recorded first wins; the other is a note.
    for _ in range(50):
        counter = Counter(3, stall_after=1)
        stream = callstream.from_callback(counter, timeout=0.05)
        with pytest.raises((callstream.StreamTimeout, ValueError)):
            with stream:
                for _item in stream:
                    counter.fail_after = 2
                    counter.release.set()
        counter.release.set()
        assert counter.finished.wait(2)


@pytest.mark.parametrize(
    "kw",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"idle_timeout": float("nan")},
        {"first_token_timeout": "5"},
        {"timeout": True},
        {"sink": "ring"},
    ],
)
def test_bad_arguments_raise_value_error(face: str, kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as info:
        make(face, Counter(1), **kw)
    assert "positive number" in str(info.value) or "'queue', 'deque', 'bounded'" in str(info.value)


def test_bad_types_raise_type_error(face: str) -> None:
    with pytest.raises(TypeError, match="producer must be callable"):
        make(face, 42)  # type: ignore[arg-type]  # the wrong type is the point
    with pytest.raises(TypeError, match="Sink instance"):
        make(face, Counter(1), sink=object())


@pytest.mark.parametrize("cls", [callstream.QueueSink, callstream.DequeSink, callstream.BoundedSink])
def test_a_sink_class_is_refused_at_the_call(face: str, cls: type) -> None:
    # The protocol check alone would accept the class (its methods are there)
    # and the worker would then fail on unbound methods.
    with pytest.raises(TypeError, match=rf"not the class {cls.__name__}: write sink={cls.__name__}\(\)"):
        make(face, Counter(1), sink=cls)


# -- misuse ---------------------------------------------------------------------


def test_tokens_and_items_cannot_mix(face: str) -> None:
    stream = make(face, Counter(3))
    stream.tokens()
    with pytest.raises(RuntimeError, match="not both"):
        if face == "sync":
            iter(stream)
        else:
            asyncio.run(stream.__anext__())
    stream.close()


def test_output_before_start_says_not_started() -> None:
    stream = callstream.from_callback(Counter(1))
    with pytest.raises(RuntimeError, match="has not started"):
        _ = stream.output
    stream.close()


def test_the_wrong_face_gets_a_hint() -> None:
    sync = callstream.from_callback(Counter(1))
    asyn = callstream.afrom_callback(Counter(1))
    with pytest.raises(TypeError, match="use `async for`"):
        list(asyn)
    with pytest.raises(TypeError, match="use `async with`"):
        with asyn:
            pass

    async def misuse() -> None:
        with pytest.raises(TypeError, match="use `for`, not `async for`"):
            async for _ in sync:
                pass
        with pytest.raises(TypeError, match="use `with`, not `async with`"):
            async with sync:
                pass

    asyncio.run(misuse())
    assert sync.status == asyn.status == "new"  # neither was started (issue 13: status agrees with the repr)
    assert "new (not started)" in repr(sync) and sync.summary.status == "new"
    sync.close()
    asyn.close()


def test_output_before_completion_raises() -> None:
    counter = Counter(3, stall_after=1)
    with callstream.from_callback(counter) as s:
        next(s)
        with pytest.raises(RuntimeError, match="still running"):
            _ = s.output
        counter.release.set()


def test_two_threads_next_never_lose_or_duplicate() -> None:
    n = 2000
    stream = callstream.from_callback(Counter(n), sink="deque")
    got: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            try:
                got.append(next(stream))
            except StopIteration:
                return
            except (RuntimeError, ValueError) as e:  # concurrent next is refused
                errors.append(e)

    with stream:
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert sorted(got, key=lambda s: int(s[1:])) == [f"t{i}" for i in range(n)]
    assert len(set(got)) == len(got)


# -- context ----------------------------------------------------------------------

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def test_contextvars_visible_in_producer_and_do_not_leak_back(face: str) -> None:
    def producer(emit: Any) -> None:
        emit(VAR.get())
        VAR.set("changed-by-producer")

    token = VAR.set("caller")
    try:
        stream = make(face, producer)
        VAR.set("after-creation")
        assert run(face, stream) == ["caller"]
        assert VAR.get() == "after-creation"
    finally:
        VAR.reset(token)


# -- threads, exit ------------------------------------------------------------------


def test_thread_start_failure_raised_and_nothing_leaked(monkeypatch: pytest.MonkeyPatch, face: str) -> None:
    def fail(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", fail)  # F35
    stream = make(face, Counter(3))
    with pytest.raises(RuntimeError, match="can't start new thread"):
        run(face, stream)
    assert stream.status == "cancelled"


def test_worker_threads_named_and_daemonic() -> None:
    counter = Counter(3, stall_after=1)
    with callstream.from_callback(counter) as s:
        next(s)
        workers = [t for t in threading.enumerate() if t.name.startswith("callstream-")]
        assert len(workers) == 1 and workers[0].daemon
        counter.release.set()


def test_repr_and_statistics() -> None:
    stream = callstream.from_callback(Counter(3), sink=callstream.BoundedSink(8, "coalesce"))
    assert "not started" in repr(stream)
    with stream:
        assert list(stream)
    assert "completed" in repr(stream) and "delivered: 3" in repr(stream)
    assert "BoundedSink(maxsize=8, overflow='coalesce')" in repr(stream)
    assert stream.statistics().finished


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT via os.kill")
def test_keyboard_interrupt_in_blocked_consumer(tmp_path: Any) -> None:
    # F14: real SIGINT while the consumer waits on a stalled producer.
    import subprocess

    script = tmp_path / "ki.py"
    script.write_text(
        "import os, signal, threading, time, callstream\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # a parent (an xdist worker) may ignore it\n"
        "stalled = threading.Event()\n"
        "def producer(emit):\n"
        "    emit('a'); stalled.set()\n"
        "    while True:\n"
        "        time.sleep(0.01); emit('b') if False else None\n"
        "s = callstream.from_callback(producer)\n"
        "def killer():\n"
        "    stalled.wait()\n"
        "    while s.statistics().consumers_waiting == 0: time.sleep(0.001)  # the consumer waits\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "threading.Thread(target=killer, daemon=True).start()\n"
        "t0 = time.monotonic()\n"
        "try:\n"
        "    with s:\n"
        "        for x in s: pass\n"
        "except KeyboardInterrupt:\n"
        "    print('KI after', round(time.monotonic() - t0, 3))\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "KI after" in proc.stdout
    # from the consumer's first wait to the KeyboardInterrupt (not the interpreter's start
    # and LangChain's import, which take seconds on a loaded machine)
    assert float(proc.stdout.split()[-1]) < 5


@pytest.mark.parametrize("how", ["break_no_with", "parked_bounded", "stalled", "async_cancel"])
def test_interpreter_exit_not_blocked(tmp_path: Any, how: str) -> None:
    # F34: scripts that abandon streams in four ways exit promptly with rc 0.
    import subprocess

    bodies = {
        "break_no_with": "for x in callstream.from_callback(forever):\n    break\n",
        "parked_bounded": "s = callstream.from_callback(forever, sink=callstream.BoundedSink(1))\nnext(s)\n",
        "stalled": "s = callstream.from_callback(stall)\nnext(s)\n",
        "async_cancel": (
            "import asyncio\n"
            "async def main():\n"
            "    async with callstream.afrom_callback(stall) as s:\n"
            "        async for x in s:\n"
            "            break\n"
            "asyncio.run(main())\n"
        ),
    }
    script = tmp_path / "exit.py"
    script.write_text(
        "import time, callstream\n"
        "print(time.monotonic(), flush=True)\n"  # imported: from here on, the exit must be prompt
        "def forever(emit):\n"
        "    while True: emit('x')\n"
        "def stall(emit):\n"
        "    emit('x'); time.sleep(30)\n" + bodies[how]
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    # CLOCK_MONOTONIC is one clock for every process: the time from the import to the exit,
    # not the interpreter's start and LangChain's import (seconds on a loaded machine)
    assert time.monotonic() - float(proc.stdout.split()[0]) < 3


def test_keyboard_interrupt_inside_close_then_second_close_finishes() -> None:
    # F14 variant: a sink hook raises KeyboardInterrupt in the first close();
    # a second close() (the user's, gc or atexit) completes the cancel.
    class Flaky(DelegatingSink):
        failed = False

        def close(self) -> None:
            if not self.failed:
                self.failed = True
                raise KeyboardInterrupt
            self.inner.close()

    counter = Counter(100_000, delay=0.0005)
    stream = callstream.from_callback(counter, sink=Flaky())
    next(stream)
    with pytest.raises(KeyboardInterrupt):
        stream.close()
    stream.close()
    assert counter.finished.wait(2)
