"""What only the async face has: task cancellation, the loop, the executor."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest

import callstream
from callstream.sinks import SinkName
from tests.helpers import Counter


@pytest.mark.parametrize("sink", ["queue", "deque", "bounded"])
def test_task_cancel_propagates_and_stops_producer(sink: SinkName) -> None:
    counter = Counter(10, stall_after=1)  # F42

    async def consume() -> None:
        async with callstream.afrom_callback(counter, sink=sink) as s:
            async for _ in s:
                pass

    async def main() -> None:
        baseline = asyncio.all_tasks()
        task = asyncio.ensure_future(consume())
        await asyncio.to_thread(counter.stalled.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert asyncio.all_tasks() == baseline

    asyncio.run(main())
    counter.release.set()
    assert counter.finished.wait(2)
    assert counter.count == 1  # stopped at its first callback after the cancel


def test_asyncio_timeout_around_loop() -> None:
    counter = Counter(10, stall_after=2)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                async with callstream.afrom_callback(counter) as s:
                    async for _ in s:
                        pass

    asyncio.run(main())
    counter.release.set()
    assert counter.finished.wait(2)
    assert counter.count == 2


def test_cancelled_anext_leaves_stream_usable() -> None:
    counter = Counter(3, stall_after=1)

    async def main() -> list[Any]:
        async with callstream.afrom_callback(counter) as s:
            got = [await s.__anext__()]
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(s.__anext__(), 0.05)
            counter.release.set()
            got += [x async for x in s]
            return got

    assert asyncio.run(main()) == ["t0", "t1", "t2"]


def test_tokens_generator_finalised_by_loop_cancels_producer() -> None:
    # F44-like: nobody calls aclose(); the loop's asyncgen finaliser does.
    counter = Counter(100_000, delay=0.0005)

    async def main() -> None:
        gen = callstream.afrom_callback(counter).tokens()
        assert await gen.__anext__() == "t0"
        del gen
        gc.collect()
        await asyncio.sleep(0.01)

    asyncio.run(main())
    assert counter.finished.wait(2)


def test_concurrent_streams_own_threads_no_executor_starvation() -> None:
    # F43: 32 streams with a 0.2 s time to first token all start at once.
    ttft = 0.2

    def producer(emit: Any) -> None:
        time.sleep(ttft)
        emit("first")

    async def one() -> float:
        t0 = time.monotonic()
        async with callstream.afrom_callback(producer) as s:
            async for _ in s:
                return time.monotonic() - t0
        raise AssertionError("no item")

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.05
        return await asyncio.gather(*(one() for _ in range(32)))

    firsts = asyncio.run(main())
    assert max(firsts) < ttft + 0.15, sorted(firsts)[-3:]


def test_emit_after_loop_closed_is_silent_drop() -> None:
    counter = Counter(5, stall_after=1)

    async def main() -> None:
        s = callstream.afrom_callback(counter, sink="deque")
        await s.__aenter__()
        await s.__anext__()
        # leave with the wakeup armed by a pending __anext__ that is cancelled
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(s.__anext__(), 0.02)
        task = asyncio.ensure_future(s.__anext__())
        await asyncio.sleep(0.01)
        task.cancel()
        stash.append(s)

    stash: list[Any] = []
    asyncio.run(main())
    counter.release.set()  # the producer emits into a sink whose loop is gone
    assert counter.finished.wait(2)
    stash[0].close()
