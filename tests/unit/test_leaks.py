"""Leaks at the edges: threads by name, memory by tracemalloc, tasks by asyncio."""

from __future__ import annotations

import asyncio
import gc
import random
import threading
import tracemalloc
from typing import Any

import callstream
from tests.conftest import SINKS, callstream_threads, wait_for_no_workers
from tests.helpers import Counter


def one_stream(i: int, rng: random.Random) -> None:
    how = i % 5
    sink = rng.choice(SINKS)
    if how == 0:  # broken off
        with callstream.from_callback(Counter(10_000), sink=sink) as s:
            for n, _ in enumerate(s):
                if n == rng.randrange(5):
                    break
    elif how == 1:  # timed out
        c = Counter(10, stall_after=1)
        try:
            with callstream.from_callback(c, sink=sink, idle_timeout=0.001) as s:
                for _ in s:
                    pass
        except callstream.StreamTimeout:
            pass
        c.release.set()
    elif how == 2:  # errored
        try:
            for _ in callstream.from_callback(Counter(10, fail_after=2), sink=sink):
                pass
        except ValueError:
            pass
    elif how == 3:  # abandoned (no with, no close)
        s = callstream.from_callback(Counter(10_000), sink=sink)
        next(s)
        del s
    else:  # completed
        list(callstream.from_callback(Counter(5), sink=sink))


#: streams per leak loop: each of the 5 ways out 60 times. The memory check keeps the target's rate
#: (at most 1 KB retained per 1,000 streams: 307 bytes here); what the loop retains is 0 bytes.
STREAMS = 300


def test_many_cancelled_streams_leave_no_thread_and_no_memory() -> None:
    rng = random.Random(7)
    baseline = threading.active_count()
    for i in range(100):  # warm-up: caches, interned strings, code objects (each way out 20 times)
        one_stream(i, rng)
    wait_for_no_workers()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(STREAMS):
            one_stream(i, rng)
        wait_for_no_workers()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if "callstream" in str(s.traceback))
    assert grown <= 1024 * STREAMS // 1000, f"callstream code retained {grown} bytes over {STREAMS} streams"
    assert threading.active_count() <= baseline  # none of ours left (another test's may end meanwhile)
    assert callstream_threads() == []


def test_many_async_cancellations_leave_no_task_or_thread() -> None:
    async def main() -> None:
        baseline = len(asyncio.all_tasks())

        async def one(i: int) -> None:
            sink = SINKS[i % 3]
            if i % 2:
                async with callstream.afrom_callback(Counter(10_000), sink=sink) as s:
                    async for _ in s:
                        break
            else:
                counter = Counter(10, stall_after=1)
                stalled.append(counter)
                task = asyncio.ensure_future(consume(callstream.afrom_callback(counter), None))
                await asyncio.sleep(0)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass

        async def consume(stream: Any, _: Any) -> None:
            async with stream as s:
                async for _ in s:
                    pass

        for i in range(STREAMS):
            await one(i)
        assert len(asyncio.all_tasks()) == baseline

    stalled: list[Counter] = []
    asyncio.run(main())
    for counter in stalled:  # a producer stalled outside a callback ends at its next one
        counter.release.set()
    wait_for_no_workers()
