"""Section `scale`: many concurrent streams of a model paced like a real one."""

from __future__ import annotations

import asyncio
import gc
import resource
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import callstream
from benchmarks.harness import Rows, pct
from callstream.testing import ScriptedChatModel


def scale(sync_streams: int, async_streams: int, tokens: int) -> list[dict[str, Any]]:
    """Many concurrent streams of a model paced like a real one (TTFT 200 ms, 50 tokens/s).

    The baseline for first-token latency is the same model streamed natively
    under the same concurrency (`model.stream()` in threads, `astream()` in tasks).
    """
    ttft = 0.2
    model = ScriptedChatModel(responses=["x" * tokens], ttft=ttft, delay=0.02)

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def scale_row(n: int, elapsed: float, firsts: list[float], peak: int) -> dict[str, Any]:
        return {
            "tokens_per_s": n * tokens / elapsed,
            "ttft_p50_ms": pct(firsts, 50) * 1e3,
            "ttft_p99_ms": pct(firsts, 99) * 1e3,
            "peak_threads": peak,
        }

    def threaded(n: int, make: Callable[[], Iterator[Any]]) -> dict[str, Any]:
        firsts: list[float] = []
        lock = threading.Lock()
        peak = [threading.active_count()]
        barrier = threading.Barrier(n)

        def one() -> None:
            barrier.wait()
            t0 = time.monotonic()
            first = None
            for _ in make():
                if first is None:
                    first = time.monotonic() - t0
                    with lock:
                        peak[0] = max(peak[0], threading.active_count())
            with lock:
                firsts.append(first or 0.0)

        t0 = time.monotonic()
        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        return scale_row(n, elapsed, firsts, peak[0])

    def in_tasks(n: int, make: Callable[[], Any]) -> dict[str, Any]:
        peak = [threading.active_count()]

        async def one() -> float:
            t0 = time.monotonic()
            first = None
            async for _ in make():
                if first is None:
                    first = time.monotonic() - t0
                    peak[0] = max(peak[0], threading.active_count())
            return first or 0.0

        async def main() -> list[float]:
            return await asyncio.gather(*(one() for _ in range(n)))

        t0 = time.monotonic()
        firsts = asyncio.run(main())
        elapsed = time.monotonic() - t0
        return scale_row(n, elapsed, firsts, peak[0])

    rows = []
    cases: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        (f"{sync_streams} threads, native model.stream()", lambda: threaded(sync_streams, lambda: model.stream("hi"))),
        (
            f"{sync_streams} threads, iter_callbacks",
            lambda: threaded(sync_streams, lambda: callstream.iter_callbacks(model, "hi", sink="deque").tokens()),
        ),
        (
            f"{async_streams} tasks, native model.astream()",
            lambda: in_tasks(async_streams, lambda: model.astream("hi")),
        ),
        (
            f"{async_streams} tasks, aiter_callbacks",
            lambda: in_tasks(async_streams, lambda: callstream.aiter_callbacks(model, "hi", sink="deque").tokens()),
        ),
    ]
    for name, fn in cases:
        gc.collect()
        row = {"row": name, "model_ttft_ms": ttft * 1e3, **fn(), "peak_rss_mb": rss_mb()}
        rows.append(row)
    return rows


def run(quick: bool) -> Rows:
    return scale(16 if quick else 256, 32 if quick else 1000, 5 if quick else 20)
