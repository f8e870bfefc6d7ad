"""Push bridge and Haystack figures: `python -m benchmarks.push` (`--quick` for tiny sizes).

1. Hand-off from an SDK's own thread to a consumer: `from_push` against the
   Queue recipe that Hayhooks and most answers use (the SDK thread puts into a
   `queue.Queue`, a sentinel ends it) and against `from_callback` wrapping the
   same SDK (its producer starts the SDK and waits for its done callback).
   Throughput (an SDK thread emitting as fast as it can) and latency (emit →
   consumer, an item every 0.2 ms), medians over repeats, as ratios.
2. Haystack: a generator's run consumed through `iter_run`/`aiter_run` against
   the same run with a streaming callback that does nothing (the floor), for
   Haystack's MockChatGenerator (no I/O: the bridge's cost laid bare) and for
   OpenAIChatGenerator over HTTP to the local test server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

import callstream

_END = object()


class SDK:
    """A push-style SDK: start() returns at once; its thread calls on_item, then on_done."""

    def __init__(self, n: int, on_item: Callable[[Any], None], on_done: Callable[[], None], pace: float = 0.0) -> None:
        self.n, self.on_item, self.on_done, self.pace = n, on_item, on_done, pace

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        on_item, pace = self.on_item, self.pace
        if pace:
            for _ in range(self.n):
                on_item(time.perf_counter())
                time.sleep(pace)  # an SDK waiting on its network: the GIL is free meanwhile
        else:
            for i in range(self.n):
                on_item(i)
        self.on_done()


# -- the three bridges: consume(n, pace, on_item) ---------------------------------------------


def queue_recipe(n: int, pace: float, on_item: Callable[[Any], None]) -> None:
    q: queue.Queue[Any] = queue.Queue()
    SDK(n, q.put, lambda: q.put(_END), pace).start()
    get = q.get
    while (item := get()) is not _END:
        on_item(item)


def push_bridge(sink: str) -> Callable[[int, float, Callable[[Any], None]], None]:
    def consume(n: int, pace: float, on_item: Callable[[Any], None]) -> None:
        def start(push: callstream.Push) -> None:
            SDK(n, push.emit, push.finish, pace).start()

        for item in callstream.from_push(start, sink=sink):  # type: ignore[arg-type]
            on_item(item)

    return consume


def apush_bridge(n: int, pace: float, on_item: Callable[[Any], None]) -> None:
    async def go() -> None:
        def start(push: callstream.Push) -> None:
            SDK(n, push.emit, push.finish, pace).start()

        async for item in callstream.afrom_push(start):
            on_item(item)

    asyncio.run(go())


def callback_bridge(n: int, pace: float, on_item: Callable[[Any], None]) -> None:
    def producer(emit: Callable[[Any], None]) -> None:
        done = threading.Event()
        SDK(n, emit, done.set, pace).start()
        done.wait()

    for item in callstream.from_callback(producer):
        on_item(item)


BRIDGES: dict[str, Callable[[int, float, Callable[[Any], None]], None]] = {
    "Queue recipe (thread + queue.Queue + sentinel)": queue_recipe,
    "from_callback wrapping the SDK": callback_bridge,
    "from_push, QueueSink": push_bridge("queue"),
    "from_push, DequeSink": push_bridge("deque"),
    "afrom_push (async consumer)": apush_bridge,
}


def throughput(consume: Callable[[int, float, Callable[[Any], None]], None], n: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        count = [0]

        def on_item(item: Any, count: list[int] = count) -> None:
            count[0] += 1

        t0 = time.perf_counter()
        consume(n, 0.0, on_item)
        rates.append(n / (time.perf_counter() - t0))
        assert count[0] == n
    return statistics.median(rates)


def latency(consume: Callable[[int, float, Callable[[Any], None]], None], n: int, repeats: int) -> tuple[float, float]:
    p50s, p99s = [], []
    for _ in range(repeats):
        lags: list[float] = []

        def lag(sent: float, lags: list[float] = lags) -> None:
            lags.append(time.perf_counter() - sent)

        consume(n, 0.0002, lag)
        lags.sort()
        p50s.append(lags[len(lags) // 2])
        p99s.append(lags[int(len(lags) * 0.99)])
    return statistics.median(p50s), statistics.median(p99s)


# -- Haystack -------------------------------------------------------------------------------------


def haystack_rows(quick: bool, repeats: int) -> list[dict[str, Any]]:
    from haystack.components.generators.chat import MockChatGenerator, OpenAIChatGenerator
    from haystack.dataclasses import ChatMessage
    from haystack.utils import Secret

    from callstream.haystack import aiter_run, iter_run
    from callstream.testing import OpenAIServer

    words = 2_000 if quick else 50_000
    mock_text = " ".join(f"w{i}" for i in range(words))
    server = OpenAIServer().start()
    http_tokens = 200 if quick else 3_000

    def mock() -> Any:
        return MockChatGenerator(responses=mock_text)

    def http() -> Any:
        return OpenAIChatGenerator(
            api_key=Secret.from_token("bench"),
            model=f"scripted:tokens={http_tokens}",
            api_base_url=server.base_url,
            max_retries=0,
        )

    def floor(make: Callable[[], Any]) -> float:
        gen = make()
        gen.warm_up()
        t0 = time.perf_counter()
        gen.run([ChatMessage.from_user("x")], streaming_callback=lambda chunk: None)
        return time.perf_counter() - t0

    def sync(make: Callable[[], Any]) -> float:
        gen = make()
        gen.warm_up()
        t0 = time.perf_counter()
        for _ in iter_run(gen, {"messages": [ChatMessage.from_user("x")]}):
            pass
        return time.perf_counter() - t0

    async def closed(gen: Any) -> None:  # its async client belongs to this loop
        close = getattr(gen, "close_async", None)
        if close is not None:
            await close()

    def recipe(make: Callable[[], Any]) -> float:  # Hayhooks' streaming_generator, reduced to its core
        gen = make()
        gen.warm_up()
        q: queue.Queue[Any] = queue.Queue()

        def run() -> None:
            try:
                gen.run([ChatMessage.from_user("x")], streaming_callback=q.put)
            finally:
                q.put(_END)

        t0 = time.perf_counter()
        threading.Thread(target=run, daemon=True).start()
        while q.get() is not _END:
            pass
        return time.perf_counter() - t0

    def asyn(make: Callable[[], Any]) -> float:
        async def go() -> float:
            gen = make()
            t0 = time.perf_counter()
            async for _ in aiter_run(gen, {"messages": [ChatMessage.from_user("x")]}):
                pass
            elapsed = time.perf_counter() - t0
            await closed(gen)
            return elapsed

        return asyncio.run(go())

    def afloor(make: Callable[[], Any]) -> float:
        async def go() -> float:
            gen = make()

            async def nothing(chunk: Any) -> None:
                pass

            t0 = time.perf_counter()
            await gen.run_async([ChatMessage.from_user("x")], streaming_callback=nothing)
            elapsed = time.perf_counter() - t0
            await closed(gen)
            return elapsed

        return asyncio.run(go())

    rows = []
    try:
        for label, make, chunks in [
            (f"MockChatGenerator, {words} chunks", mock, words),
            (f"OpenAIChatGenerator over HTTP, {http_tokens} chunks", http, http_tokens),
        ]:
            for face, base, ours in [
                ("sync, Queue recipe (Hayhooks-style)", floor, recipe),
                ("sync, iter_run", floor, sync),
                ("async, aiter_run", afloor, asyn),
            ]:
                base_t = statistics.median(base(make) for _ in range(repeats))
                ours_t = statistics.median(ours(make) for _ in range(repeats))
                rows.append(
                    {
                        "row": f"{label}, {face}",
                        "floor_chunks_per_s": chunks / base_t,
                        "callstream_chunks_per_s": chunks / ours_t,
                        "ratio": base_t / ours_t,
                    }
                )
    finally:
        server.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args(argv)
    n = 5_000 if args.quick else 200_000
    n_lat = 200 if args.quick else 3_000
    repeats = 1 if args.quick else 5

    print(f"## Push hand-off from an SDK thread ({n} items; latency: {n_lat} items, one per 0.2 ms)\n")
    # Repeats interleave the bridges, so that a change of load on the machine hits them all alike.
    rates: dict[str, list[float]] = {name: [] for name in BRIDGES}
    p50s: dict[str, list[float]] = {name: [] for name in BRIDGES}
    p99s: dict[str, list[float]] = {name: [] for name in BRIDGES}
    for _ in range(repeats):
        for name, consume in BRIDGES.items():
            rates[name].append(throughput(consume, n, 1))
            one_p50, one_p99 = latency(consume, n_lat, 1)
            p50s[name].append(one_p50)
            p99s[name].append(one_p99)
    rate = {name: statistics.median(v) for name, v in rates.items()}
    p50 = {name: statistics.median(v) for name, v in p50s.items()}
    p99 = {name: statistics.median(v) for name, v in p99s.items()}
    base = next(iter(BRIDGES))
    print("| bridge | items/s | vs Queue recipe | p50 latency µs | p99 latency µs | p99 vs Queue recipe |")
    print("|---|---|---|---|---|---|")
    for name in BRIDGES:
        print(
            f"| {name} | {rate[name]:,.0f} | {rate[name] / rate[base]:.2f} | {p50[name] * 1e6:.0f} | "
            f"{p99[name] * 1e6:.0f} | {p99[name] / p99[base]:.2f} |",
            flush=True,
        )

    print("\n## Haystack through callstream vs the generator's own callback doing nothing (the floor)\n")
    print("| run | floor chunks/s | bridged chunks/s | throughput ratio |")
    print("|---|---|---|---|")
    for row in haystack_rows(args.quick, repeats):
        print(
            f"| {row['row']} | {row['floor_chunks_per_s']:,.0f} | {row['callstream_chunks_per_s']:,.0f} | "
            f"{row['ratio']:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
